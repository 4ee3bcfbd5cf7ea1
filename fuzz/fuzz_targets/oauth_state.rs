//! Opening the OAuth state cookie (`Vault::open_token`): any cookie value is refused unless this vault
//! sealed it; a sealed value opens only for its own context.
#![no_main]
use crmsync_store::Vault;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let vault = Vault::new(&"5a".repeat(32), Some(&"a5".repeat(32))).expect("vault");
    let text = String::from_utf8_lossy(data);
    assert!(
        vault.open_token("oauth-state", &text).is_err(),
        "forged: {text:?}"
    );
    let sealed = vault.seal_token("oauth-state", data).expect("seal");
    assert_eq!(
        vault.open_token("oauth-state", &sealed).expect("open"),
        data
    );
    assert!(vault.open_token("other", &sealed).is_err());
});
