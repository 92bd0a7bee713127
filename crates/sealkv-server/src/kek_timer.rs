//! Times the KEK's unwraps for `sealkv_encryption_kek_unwrap_seconds` (spec 03 §7). Every DEK a
//! node loads passes through the KEK, at start and whenever a rotation applies, and a KEK held by
//! an HSM or a KMS answers over a device or the network: operators see what unwraps cost without
//! reading logs. Only durations are kept, never key bytes.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use sealkv_crypto::DEK_LEN;
use sealkv_crypto::kek::{DekIdentity, KekError, KekProvider};
use sealkv_raft::timing::Timing;
use zeroize::Zeroizing;

/// A KEK whose unwraps, failed ones included, are timed into a [`Timing`]; wraps pass straight
/// through.
pub struct TimedKek {
    inner: Arc<dyn KekProvider>,
    timings: Arc<Timing>,
}

impl TimedKek {
    /// Times `inner`'s unwraps into `timings`.
    pub fn new(inner: Arc<dyn KekProvider>, timings: Arc<Timing>) -> Self {
        TimedKek { inner, timings }
    }
}

impl fmt::Debug for TimedKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl KekProvider for TimedKek {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn wrap(&self, id: DekIdentity, dek: &[u8; DEK_LEN]) -> Result<Vec<u8>, KekError> {
        self.inner.wrap(id, dek)
    }

    fn unwrap(&self, id: DekIdentity, wrapped: &[u8]) -> Result<Zeroizing<[u8; DEK_LEN]>, KekError> {
        let started = Instant::now();
        let out = self.inner.unwrap(id, wrapped);
        self.timings.observe(started);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealkv_crypto::Purpose;
    use sealkv_crypto::kek::LocalKek;

    #[test]
    fn unwraps_are_counted_and_timed_and_answer_as_the_kek_does() {
        let inner: Arc<dyn KekProvider> = Arc::new(LocalKek::new(&Zeroizing::new([7u8; 32]), "test".into()).unwrap());
        let timings = Arc::new(Timing::default());
        let kek = TimedKek::new(inner.clone(), timings.clone());
        let id = DekIdentity { purpose: Purpose::Storage, dek_id: 3 };
        let wrapped = kek.wrap(id, &[9u8; DEK_LEN]).unwrap();
        assert_eq!(timings.count(), 0, "a wrap is not an unwrap");
        assert_eq!(*kek.unwrap(id, &wrapped).unwrap(), [9u8; DEK_LEN]);
        let other = DekIdentity { purpose: Purpose::Storage, dek_id: 4 };
        assert!(kek.unwrap(other, &wrapped).is_err(), "the identity stays bound");
        assert_eq!(timings.count(), 2);
        assert!(timings.seconds() > 0.0);
        assert_eq!(kek.describe(), inner.describe());
    }
}
