use super::cursor::decode_cursor;
use super::*;
use bulkhead_model::AppManifest;

fn entity() -> AppManifest {
    AppManifest::from_yaml(
        "app: shop\nentities:\n  item:\n    owner: author\n    fields:\n      name: { type: text, required: true }\n      n: int\n      meta: json\n",
        "t",
    )
    .unwrap()
}

#[test]
fn every_statement_filters_the_tenant_and_binds_values() {
    let m = entity();
    let e = m.entity("item").unwrap();
    let t = TenantId::parse("acme").unwrap();
    let spec = QuerySpec {
        filter: Some(Filter::And(vec![
            Filter::eq("name", "x'; DROP TABLE item; --"),
            Filter::contains("name", "50%_off"),
        ])),
        ..QuerySpec::default()
    };
    let (sql, params) = select_sql("public", e, Some(&t), &spec).unwrap();
    assert!(sql.contains(r#""tenant_id" = $1::text"#), "{sql}");
    assert!(
        !sql.contains("DROP"),
        "values are never in the SQL text: {sql}"
    );
    // The tenant and the two filter values; the limit is a checked integer in the text.
    assert_eq!(params.len(), 3);
    assert!(sql.ends_with(" LIMIT 51"), "{sql}");
    let (sql, _) = count_sql("public", e, Some(&t), None).unwrap();
    assert!(sql.contains(r#""tenant_id" = $1::text"#));
    // Every read on a tenant entity can be made one self-scoping statement, whose read takes
    // its tenant from the setting subquery alone.
    let id = "0b6e6c1e-5a4f-4e4b-9c1e-000000000000";
    let listed = select_sql("public", e, Some(&t), &spec).unwrap().0;
    let got = get_sql("public", e, Some(&t), id, None).unwrap().0;
    for read in [listed, sql, got] {
        let wrapped = self_scoped_read(&read).unwrap_or_else(|| panic!("not self-scoping: {read}"));
        let inner = wrapped.split_once("CROSS JOIN LATERAL").unwrap().1;
        assert!(
            inner.contains(r#""tenant_id" = bulkhead_scope.tenant"#) && !inner.contains("$1::"),
            "{wrapped}"
        );
    }
    for (sql, _) in [
        get_sql("public", e, Some(&t), id, None).unwrap(),
        delete_sql("public", e, Some(&t), id, None).unwrap(),
        update_sql(
            "public",
            e,
            Some(&t),
            id,
            &serde_json::json!({"n": 1}),
            None,
            &[],
        )
        .unwrap(),
    ] {
        assert!(sql.contains(r#""tenant_id" = $1::text"#), "{sql}");
    }
}

#[test]
fn a_tenant_entity_without_a_tenant_fails_closed() {
    let m = entity();
    let e = m.entity("item").unwrap();
    assert!(matches!(
        select_sql("public", e, None, &QuerySpec::default()),
        Err(Error::TenantNotFound)
    ));
}

#[test]
fn platform_columns_and_unknown_fields_cannot_be_written() {
    let m = entity();
    let e = m.entity("item").unwrap();
    let t = TenantId::parse("acme").unwrap();
    for bad in [
        serde_json::json!({"name": "x", "tenant_id": "other"}),
        serde_json::json!({"name": "x", "id": "0b6e6c1e-5a4f-4e4b-9c1e-000000000000"}),
        serde_json::json!({"name": "x", "nope": 1}),
    ] {
        assert!(matches!(
            insert_sql("public", e, &bad, Some(&t), None, &[]),
            Err(Error::UnknownField { .. })
        ));
    }
    assert!(matches!(
        insert_sql(
            "public",
            e,
            &serde_json::json!({"n": 1}),
            Some(&t),
            None,
            &[]
        ),
        Err(Error::MissingField { .. })
    ));
    assert!(matches!(
        insert_sql(
            "public",
            e,
            &serde_json::json!({"name": "x", "n": "one"}),
            Some(&t),
            None,
            &[],
        ),
        Err(Error::WrongType { .. })
    ));
}

#[test]
fn the_owner_field_is_filled_by_the_platform() {
    let m = entity();
    let e = m.entity("item").unwrap();
    let t = TenantId::parse("acme").unwrap();
    let (sql, params) = insert_sql(
        "public",
        e,
        &serde_json::json!({"name": "x", "author": "mallory"}),
        Some(&t),
        Some("alice"),
        &[],
    )
    .unwrap();
    assert!(sql.contains(r#""author""#));
    assert_eq!(format!("{:?}", params[2]), "\"alice\"");
}

#[test]
fn times_format_as_rfc3339_utc() {
    use std::time::{Duration, UNIX_EPOCH};
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    let t = UNIX_EPOCH + Duration::from_micros(1_795_428_000_123_456);
    assert_eq!(rfc3339(t), "2026-11-23T10:00:00.123456Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    let before = UNIX_EPOCH - Duration::from_micros(1);
    assert_eq!(rfc3339(before), "1969-12-31T23:59:59.999999Z");
    let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800); // 10000-01-01
    assert_eq!(rfc3339(far), "10000-01-01T00:00:00.000000Z");
}

proptest::proptest! {
    /// Any instant from year 1 to 9999 formats to the RFC 3339 text of the same instant, to
    /// the microsecond, in the fixed width the API promises.
    #[test]
    fn any_time_formats_as_the_same_instant(micros in -62_135_596_800_000_000i64..253_402_300_800_000_000) {
        use std::time::{Duration, UNIX_EPOCH};
        let t = if micros >= 0 {
            UNIX_EPOCH + Duration::from_micros(micros.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
        };
        let text = rfc3339(t);
        proptest::prop_assert_eq!(text.len(), 27, "{}", text);
        let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
        proptest::prop_assert_eq!(parsed.unix_timestamp_nanos(), i128::from(micros) * 1000, "{}", text);
    }
}

#[test]
fn cursors_round_trip_and_garbage_is_a_bad_query() {
    let c = encode_cursor(&Value::from(5), &Value::from("id-1"));
    assert_eq!(
        decode_cursor(&c).unwrap(),
        (Value::from(5), "id-1".to_owned())
    );
    assert!(matches!(decode_cursor("zz"), Err(Error::BadQuery(_))));
    assert!(matches!(decode_cursor("00"), Err(Error::BadQuery(_))));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("BULKHEAD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// A cursor from the client is decoded or refused as a bad query, never a panic, and a
    /// keyset on any field with a decoded cursor binds only checked values.
    #[test]
    fn arbitrary_cursors_are_decoded_or_bad_queries(s in "\\PC{0,60}|[0-9a-fé]{0,64}") {
        match decode_cursor(&s) {
            Ok(_) | Err(Error::BadQuery(_)) => {}
            Err(other) => proptest::prop_assert!(false, "{other:?}"),
        }
        let m = entity();
        let e = m.entity("item").unwrap();
        let t = TenantId::parse("acme").unwrap();
        for order in ["n", "name", "id", "created_at"] {
            let spec = QuerySpec { order_field: order.into(), after: Some(s.clone()), ..QuerySpec::default() };
            if let Err(e) = select_sql("public", e, Some(&t), &spec) {
                proptest::prop_assert_eq!(e.code().http_status(), 400, "{:?}", e);
            }
        }
    }
}
