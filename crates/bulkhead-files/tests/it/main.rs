#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Bucket and tenant isolation on the local backend and on Garage; streamed uploads.

use bulkhead_files::{AppBucket, Error};
use bulkhead_model::{AppId, TenantId};
use bytes::Bytes;

fn app(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[tokio::test]
async fn tenants_and_apps_never_see_each_others_files() {
    let root = tempfile::tempdir().unwrap();
    let a = AppBucket::local(root.path(), &app("alpha")).unwrap();
    let b = AppBucket::local(root.path(), &app("beta")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.path().join("alpha"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // "ab" and "abc": neither prefix contains the other.
    let ab = a.tenant(&tenant("ab"));
    let abc = a.tenant(&tenant("abc"));
    ab.put("report.pdf", Bytes::from_static(b"ab's"), 1024)
        .await
        .unwrap();
    abc.put("report.pdf", Bytes::from_static(b"abc's"), 1024)
        .await
        .unwrap();
    abc.put("deep/x.txt", Bytes::from_static(b"x"), 1024)
        .await
        .unwrap();
    assert_eq!(
        ab.get("report.pdf").await.unwrap(),
        Bytes::from_static(b"ab's")
    );
    assert_eq!(ab.list().await.unwrap(), ["report.pdf"]);
    assert_eq!(abc.list().await.unwrap(), ["deep/x.txt", "report.pdf"]);
    // The same tenant in another app's bucket has nothing.
    assert!(matches!(
        b.tenant(&tenant("ab")).get("report.pdf").await,
        Err(Error::NotFound(_))
    ));
    assert!(b.tenant(&tenant("ab")).list().await.unwrap().is_empty());

    // Traversal out of the tenant prefix or the bucket is refused before any I/O.
    for key in [
        "../abc/report.pdf",
        "../../beta/x",
        "/etc/passwd",
        "a/../../b",
        "./report.pdf",
    ] {
        assert!(matches!(ab.get(key).await, Err(Error::BadKey(_))), "{key}");
        assert!(
            matches!(ab.put(key, Bytes::new(), 10).await, Err(Error::BadKey(_))),
            "{key}"
        );
    }
    assert!(matches!(
        ab.put("big", Bytes::from(vec![0u8; 11]), 10).await,
        Err(Error::TooLarge { .. })
    ));
    // Deleting a tenant's files leaves its neighbour's.
    assert_eq!(abc.delete_all().await.unwrap(), 2);
    assert_eq!(ab.list().await.unwrap(), ["report.pdf"]);
}

/// Per-app buckets on a real Garage server: each app's key works on its own bucket and gets
/// 403 on another app's; provisioning twice gives the same key.
#[tokio::test]
async fn on_garage_each_apps_key_opens_only_its_own_bucket() {
    use bulkhead_files::garage::GarageAdmin;
    use bulkhead_model::Secret;
    let server = bulkhead_testkit::garage::Garage::start().unwrap();
    let admin = GarageAdmin::new(
        &server.admin_url(),
        Secret::new(server.admin_token()),
        &server.s3_endpoint(),
        bulkhead_testkit::garage::REGION,
    )
    .unwrap();
    let (a, b) = (app("billing"), app("crm"));
    let bucket_a = admin.ensure_app_bucket(&a).await.unwrap();
    let bucket_b = admin.ensure_app_bucket(&b).await.unwrap();
    assert_ne!(bucket_a.access_key_id, bucket_b.access_key_id);
    assert_eq!(
        admin.ensure_app_bucket(&a).await.unwrap(),
        bucket_a,
        "idempotent"
    );

    let files_a = AppBucket::s3(&a, &bucket_a)
        .unwrap()
        .tenant(&tenant("acme"));
    files_a
        .put("doc.txt", Bytes::from_static(b"A's"), 1024)
        .await
        .unwrap();
    assert_eq!(
        files_a.get("doc.txt").await.unwrap(),
        Bytes::from_static(b"A's")
    );
    assert_eq!(files_a.list().await.unwrap(), ["doc.txt"]);

    // A's key pointed at B's bucket: refused by Garage, for reads, writes and listings.
    let a_on_b = AppBucket::s3(
        &a,
        &bulkhead_files::S3Bucket {
            bucket: bucket_b.bucket.clone(),
            ..bucket_a.clone()
        },
    )
    .unwrap()
    .tenant(&tenant("acme"));
    let files_b = AppBucket::s3(&b, &bucket_b)
        .unwrap()
        .tenant(&tenant("acme"));
    files_b
        .put("doc.txt", Bytes::from_static(b"B's"), 1024)
        .await
        .unwrap();
    assert!(matches!(a_on_b.get("doc.txt").await, Err(Error::Denied)));
    assert!(matches!(
        a_on_b.put("x.txt", Bytes::from_static(b"x"), 1024).await,
        Err(Error::Denied)
    ));
    let listed = a_on_b.list().await;
    assert!(matches!(listed, Err(Error::Denied)), "{listed:?}");
    // A forged secret for A's own key id is refused as well.
    let forged = AppBucket::s3(
        &a,
        &bulkhead_files::S3Bucket {
            secret_access_key: Secret::new("0".repeat(64)),
            ..bucket_a.clone()
        },
    )
    .unwrap()
    .tenant(&tenant("acme"));
    assert!(forged.get("doc.txt").await.is_err());
    // Traversal never reaches the backend.
    assert!(matches!(
        files_a.get("../../crm/doc.txt").await,
        Err(Error::BadKey(_))
    ));
    // Deleting the app's key revokes it.
    admin.delete_app_key(&a).await.unwrap();
    assert!(files_a.get("doc.txt").await.is_err());
}

/// A body of `len` bytes in 64 KiB chunks, as an HTTP body arrives.
fn chunks(len: usize) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let parts: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(parts)
}

/// Streams a small and a multi-part body, then one over the limit and one that fails midway:
/// the last two leave nothing behind.
async fn streams_and_aborts(files: &bulkhead_files::TenantFiles) {
    let big = 2 * bulkhead_files::PART_BYTES + 12345;
    assert_eq!(
        files
            .put_stream("small.bin", chunks(1000), big)
            .await
            .unwrap(),
        1000
    );
    assert_eq!(
        files.put_stream("big.bin", chunks(big), big).await.unwrap(),
        big
    );
    let back = files.get("big.bin").await.unwrap();
    assert_eq!(back.len(), big);
    assert!(back.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    let err = files
        .put_stream("over.bin", chunks(big + 1), big)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let failing = futures_util::StreamExt::chain(
        chunks(bulkhead_files::PART_BYTES + 1),
        futures_util::stream::iter([Err(std::io::Error::other("client went away"))]),
    );
    let err = files.put_stream("cut.bin", failing, big).await.unwrap_err();
    assert!(matches!(err, Error::Body(_)), "{err}");
    assert!(matches!(
        files.get("over.bin").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        files.get("cut.bin").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(files.list().await.unwrap(), ["big.bin", "small.bin"]);
}

#[tokio::test]
async fn uploads_stream_in_parts_and_oversized_or_broken_ones_leave_nothing() {
    let root = tempfile::tempdir().unwrap();
    let files = AppBucket::local(root.path(), &app("alpha"))
        .unwrap()
        .tenant(&tenant("acme"));
    streams_and_aborts(&files).await;
    let leftovers: Vec<_> = bulkhead_testkit::files_under(root.path())
        .into_iter()
        .filter(|p| !p.ends_with("big.bin") && !p.ends_with("small.bin"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let server = bulkhead_testkit::garage::Garage::start().unwrap();
    let admin = bulkhead_files::garage::GarageAdmin::new(
        &server.admin_url(),
        bulkhead_model::Secret::new(server.admin_token()),
        &server.s3_endpoint(),
        bulkhead_testkit::garage::REGION,
    )
    .unwrap();
    let bucket = admin.ensure_app_bucket(&app("stream")).await.unwrap();
    let files = AppBucket::s3(&app("stream"), &bucket)
        .unwrap()
        .tenant(&tenant("acme"));
    streams_and_aborts(&files).await;
}
