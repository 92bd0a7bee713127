//! `EnvKek::take_from_env` removes the variable. Its own test binary with one test, so no other
//! thread touches the environment while it runs (the function's safety contract).

use sealkv_crypto::Purpose;
use sealkv_crypto::kek::{DekIdentity, EnvKek, KekProvider};

#[test]
fn take_from_env_reads_then_removes_the_variable() {
    let var = "SEALKV_TEST_KEK_TAKE";
    // SAFETY: this binary runs exactly one test; no other thread reads or writes the environment.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(var, "11".repeat(32));
    }
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let kek = unsafe { EnvKek::take_from_env(var) }.unwrap();
    assert!(std::env::var_os(var).is_none(), "the KEK must leave the environment");
    let id = DekIdentity { purpose: Purpose::Raft, dek_id: 3 };
    assert_eq!(*kek.unwrap(id, &kek.wrap(id, &[4; 32]).unwrap()).unwrap(), [4; 32]);
    #[allow(unsafe_code)]
    // SAFETY: as above.
    let missing = unsafe { EnvKek::take_from_env(var) };
    assert!(missing.is_err());
}
