use bulkhead_model::AppId;
use bulkhead_vault::embedded::EmbeddedReader;
use bulkhead_vault::{BootCredential, Error, Secret, VaultReader};
use bulkhead_vault_admin::VaultAdmin;
use bulkhead_vault_admin::embedded::{EmbeddedAdmin, MasterKey};

fn app(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

#[tokio::test]
async fn each_app_reads_only_its_own_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let admin = EmbeddedAdmin::open(&root, MasterKey::generate()).unwrap();
    let (a, b) = (app("alpha"), app("beta"));
    let cred_a = admin.create_app(&a).await.unwrap();
    let cred_b = admin.create_app(&b).await.unwrap();
    assert_eq!(admin.create_app(&a).await.unwrap(), cred_a, "idempotent");
    assert_eq!(admin.boot_credential(&a).await.unwrap(), cred_a);
    assert!(admin.boot_credential(&app("gamma")).await.is_err());
    admin
        .put(&a, "db/password", &Secret::new("alpha-pw-123"))
        .await
        .unwrap();
    admin
        .put(&b, "db/password", &Secret::new("beta-pw-456"))
        .await
        .unwrap();

    let reader_a = EmbeddedReader::open(&root, a.clone(), &cred_a).unwrap();
    assert_eq!(
        reader_a.get("db/password").await.unwrap().expose(),
        "alpha-pw-123"
    );
    // A's key on B's files: nothing.
    assert!(matches!(
        reader_a.get_of(&b, "db/password"),
        Err(Error::Denied)
    ));
    // B's key pretending to be A: nothing.
    let impostor = EmbeddedReader::open(&root, a.clone(), &cred_b).unwrap();
    assert!(matches!(
        impostor.get("db/password").await,
        Err(Error::Denied)
    ));
    // No credential at all: the files hold no plaintext.
    for file in bulkhead_testkit::files_under(&root) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [&b"alpha-pw-123"[..], &b"beta-pw-456"[..]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{}",
                file.display()
            );
        }
        assert!(
            !file.to_string_lossy().contains(".tmp-"),
            "no temp files left: {}",
            file.display()
        );
    }
    // Another master key cannot unwrap the app keys.
    let other = EmbeddedAdmin::open(&root, MasterKey::generate()).unwrap();
    assert!(matches!(
        other.get(&a, "db/password").await,
        Err(Error::Corrupt(_))
    ));
    // A random key is refused.
    let random = BootCredential::Embedded { key: [9; 32] };
    let r = EmbeddedReader::open(&root, a.clone(), &random).unwrap();
    assert!(matches!(r.get("db/password").await, Err(Error::Denied)));
}

#[tokio::test]
async fn tampering_and_moved_files_are_detected_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let admin = EmbeddedAdmin::open(&root, MasterKey::generate()).unwrap();
    let a = app("alpha");
    let cred = admin.create_app(&a).await.unwrap();
    admin.put(&a, "one", &Secret::new("1")).await.unwrap();
    admin.put(&a, "two", &Secret::new("2")).await.unwrap();
    let secrets = root.join("apps/alpha/secrets");
    // Moving "one" over "two" (same app, same key) does not open: the name is authenticated.
    std::fs::copy(secrets.join("one.sealed"), secrets.join("two.sealed")).unwrap();
    let reader = EmbeddedReader::open(&root, a.clone(), &cred).unwrap();
    assert!(reader.get("two").await.is_err());
    // A flipped bit is refused, never returned as garbage.
    let mut bytes = std::fs::read(secrets.join("one.sealed")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(secrets.join("one.sealed"), bytes).unwrap();
    assert!(reader.get("one").await.is_err());
    for bad in ["../../etc/passwd", "/abs", "a/../b", "UPPER"] {
        assert!(
            matches!(
                admin.put(&a, bad, &Secret::new("x")).await,
                Err(Error::BadName(_))
            ),
            "{bad}"
        );
        assert!(
            matches!(reader.get(bad).await, Err(Error::BadName(_))),
            "{bad}"
        );
    }
    // Deleting the app removes its secrets and key.
    admin.delete_app(&a).await.unwrap();
    assert!(!root.join("apps/alpha").exists());
}
