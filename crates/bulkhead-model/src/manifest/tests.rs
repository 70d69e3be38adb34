use super::*;

const GOOD: &str = r#"app: helpdesk
entities:
  customer:
    fields:
      name: { type: text, required: true, unique: true, search: true }
  ticket:
    owner: author
    fields:
      title: { type: text, required: true, search: true, max_length: 200 }
      prio: { type: int, default: 3 }
      status: { type: enum, values: [open, closed], default: open }
      customer: { type: ref, entity: customer }
      country: { type: ref, entity: country }
      body: text
      due: date
      paid: numeric
    unique: [[customer, title]]
    indexes: [[status, prio]]
  country:
    cross_tenant: true
    fields:
      code: { type: text, required: true, unique: true }
cross_tenant_reads: [ticket]
"#;

#[test]
fn a_good_manifest_parses_with_everything_in_it() {
    let m = AppManifest::from_yaml(GOOD, "helpdesk.yaml").unwrap();
    assert_eq!(m.app.as_str(), "helpdesk");
    let ticket = m.entity("ticket").unwrap();
    assert_eq!(ticket.field("prio").unwrap().default, Some(3.into()));
    assert_eq!(
        ticket.field("author").unwrap().ty,
        FieldType::Text { max_length: None },
        "owner field is added as text"
    );
    assert!(m.entity("country").unwrap().cross_tenant);
    assert!(m.grants_cross_tenant("ticket"));
    assert!(!m.grants_cross_tenant("customer"));
}

#[test]
fn a_manifest_round_trips_through_json() {
    let m = AppManifest::from_yaml(GOOD, "x").unwrap();
    let json = serde_json::to_string(&m).unwrap();
    let back: AppManifest = serde_json::from_str(&json).unwrap();
    assert_eq!(m, back);
}

#[test]
fn every_problem_is_reported_at_once_with_line_and_path() {
    let bad = r#"app: helpdesk
entities:
  ticket:
    fields:
      prio: { type: integer }
      select: text
      customer: { type: ref, entity: client }
      tenant_id: text
      status: { type: enum, values: [a, b], default: c }
    unique: [[nope]]
  Bad-Name:
    fields: { x: text }
cross_tenant_reads: [missing]
"#;
    let err = AppManifest::from_yaml(bad, "helpdesk.yaml").unwrap_err();
    let text = err.to_string();
    assert!(
            text.contains(
                "helpdesk.yaml:5:21: entities.ticket.fields.prio.type: unknown type \"integer\", expected one of text, int"
            ),
            "{text}"
        );
    assert!(text.contains("entities.ticket.fields.select"), "{text}");
    assert!(text.contains("client"), "{text}");
    assert!(text.contains("platform column"), "{text}");
    assert!(
        text.contains("entities.ticket.fields.status.default"),
        "{text}"
    );
    assert!(text.contains("entities.ticket.unique[0]"), "{text}");
    assert!(text.contains("entities.Bad-Name"), "{text}");
    assert!(text.contains("cross_tenant_reads[0]"), "{text}");
    assert!(err.problems.len() >= 8, "{text}");
}

#[test]
fn unknown_keys_and_duplicate_names_are_refused() {
    let bad = "app: helpdesk\nentities:\n  ticket:\n    feilds: {}\n    fields:\n      a: text\n      a: int\n";
    let err = AppManifest::from_yaml(bad, "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate key \"a\""), "{err}");
}

#[test]
fn flags_and_settings_are_declared_with_typed_defaults() {
    let good = "app: hd\nentities:\n  t:\n    fields:\n      a: text\nflags:\n  beta: { type: bool, default: true }\n  layout: { type: json, default: { cols: 2 } }\nsettings:\n  sla: { schema: { type: integer }, default: 48 }\n  key: { schema: { type: string }, secret: true }\n";
    let m = AppManifest::from_yaml(good, "m.yaml").unwrap();
    assert_eq!(m.flag("beta").unwrap().default, serde_json::json!(true));
    assert_eq!(m.flag("layout").unwrap().default["cols"], 2);
    assert!(m.setting("key").unwrap().secret);
    let bad = "app: hd\nentities:\n  t:\n    fields:\n      a: text\nflags:\n  beta: { type: bool, default: yes please }\n  odd: { type: color, default: red }\n  nodefault: { type: bool }\nsettings:\n  s: { schema: 5 }\n  k: { schema: { type: string }, secret: true, default: x }\n";
    let err = AppManifest::from_yaml(bad, "m.yaml")
        .unwrap_err()
        .to_string();
    for expected in [
        "m.yaml:7:",
        "flags.beta.default: expected a bool value",
        "flags.odd.type: unknown flag type",
        "flags.nodefault.default: missing",
        "settings.s.schema: expected a JSON Schema",
        "settings.k.default: a secret setting has no default",
    ] {
        assert!(err.contains(expected), "{expected} in {err}");
    }
}

#[test]
fn unknown_entity_keys_are_refused() {
    let bad = "app: helpdesk\nentities:\n  ticket:\n    feilds: {}\n    fields:\n      a: text\n";
    let err = AppManifest::from_yaml(bad, "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m.yaml:4:5: entities.ticket.feilds: unknown key"),
        "{err}"
    );
}

#[test]
fn a_global_entity_cannot_point_at_tenant_data_or_be_granted() {
    let bad = "app: helpdesk\nentities:\n  t:\n    fields: { a: text }\n  g:\n    cross_tenant: true\n    fields:\n      r: { type: ref, entity: t }\ncross_tenant_reads: [g]\n";
    let err = AppManifest::from_yaml(bad, "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot refer to tenant entity"), "{err}");
    assert!(err.contains("readable by every tenant already"), "{err}");
}

#[test]
fn permissions_combine_roles_and_validate() {
    let yaml = "app: helpdesk\nentities:\n  ticket:\n    owner: author\n    fields:\n      title: text\n      note: text\n      status: text\n    permissions:\n      agent: { read: all, create: all, update: all, delete: all }\n      customer: { read: own, create: all, update: own, hidden: [note], readonly: [status] }\n      anonymous: { read: all, hidden: [note, status] }\n";
    let m = AppManifest::from_yaml(yaml, "m.yaml").unwrap();
    let t = m.entity("ticket").unwrap();
    let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let c = t.effective(&roles(&["customer"]), Action::Read);
    assert_eq!(
        (c.scope, c.hidden.clone()),
        (Scope::Own, vec!["note".to_owned()])
    );
    assert_eq!(
        t.effective(&roles(&["customer"]), Action::Delete).scope,
        Scope::None
    );
    assert_eq!(
        t.effective(&roles(&["customer"]), Action::Update).readonly,
        ["status"]
    );
    let both = t.effective(&roles(&["customer", "agent"]), Action::Read);
    assert_eq!((both.scope, both.hidden.len()), (Scope::All, 0));
    assert_eq!(
        t.effective(&roles(&["stranger"]), Action::Read).scope,
        Scope::None
    );
    let anon = t.effective(&roles(&["anonymous"]), Action::Read);
    assert_eq!(anon.hidden, ["note", "status"]);
    // Without a permissions block: signed-in roles may do all, anonymous nothing.
    let open =
        AppManifest::from_yaml("app: x1\nentities:\n  a:\n    fields: { b: text }\n", "m").unwrap();
    let a = open.entity("a").unwrap();
    assert_eq!(
        a.effective(&roles(&["user"]), Action::Delete).scope,
        Scope::All
    );
    assert_eq!(
        a.effective(&roles(&["anonymous"]), Action::Read).scope,
        Scope::None
    );

    let bad = "app: helpdesk\nentities:\n  ticket:\n    fields:\n      title: text\n    permissions:\n      agent: { read: own, write: all, hidden: [nope] }\n      Bad: { read: all }\n";
    let err = AppManifest::from_yaml(bad, "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entities.ticket.permissions.agent.read: scope own needs"),
        "{err}"
    );
    assert!(
        err.contains("entities.ticket.permissions.agent.write: unknown key"),
        "{err}"
    );
    assert!(err.contains("unknown field \"nope\""), "{err}");
    assert!(err.contains("entities.ticket.permissions.Bad"), "{err}");
}

#[test]
fn values_are_checked_by_type() {
    assert!(FieldType::Int.check(&Value::from(5)).is_ok());
    assert!(matches!(
        FieldType::Int.check(&Value::from(1_i64 << 40)),
        Err(ValueProblem::OutOfRange { .. })
    ));
    assert!(matches!(
        FieldType::Int.check(&Value::from("5")),
        Err(ValueProblem::WrongType { .. })
    ));
    assert!(
        FieldType::Uuid
            .check(&Value::from("0b6e6c1e-5a4f-4e4b-9c1e-000000000000"))
            .is_ok()
    );
    assert!(FieldType::Uuid.check(&Value::from("nope")).is_err());
    assert!(FieldType::Date.check(&Value::from("2026-11-23")).is_ok());
    assert!(FieldType::Date.check(&Value::from("2026-13-23")).is_err());
    assert!(
        FieldType::Timestamp
            .check(&Value::from("2026-11-23T10:00:00Z"))
            .is_ok()
    );
    assert!(
        FieldType::Timestamp
            .check(&Value::from("2026-11-23T10:00:00+01:00"))
            .is_ok()
    );
    assert!(FieldType::Numeric.check(&Value::from("12.50")).is_ok());
    assert!(FieldType::Numeric.check(&Value::from("12.5.0")).is_err());
    assert!(
        FieldType::Text {
            max_length: Some(3)
        }
        .check(&Value::from("abcd"))
        .is_err()
    );
    assert!(
        FieldType::Text { max_length: None }
            .check(&Value::from("a\0b"))
            .is_err()
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("BULKHEAD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// Any Unicode as a name, type, default or enum value gives a manifest or positioned
    /// problems, never a panic; a default the manifest accepts passes its type's check.
    #[test]
    fn arbitrary_unicode_scalars_never_panic(
        name in "\\PC{0,20}", ty in "\\PC{0,12}|timestamp|date|numeric|uuid|json|int",
        default in "\\PC{0,40}", value in "\\PC{0,10}"
    ) {
        let doc = format!(
            "app: hd\nentities:\n  {name}:\n    fields:\n      f: {{ type: {ty}, default: \"{default}\" }}\n      e: {{ type: enum, values: [\"{value}\", b] }}\nflags:\n  {name}: {{ type: {ty}, default: {default} }}\n"
        );
        if let Ok(m) = AppManifest::from_yaml(&doc, "manifest.yaml") {
            for e in &m.entities {
                for f in &e.fields {
                    if let Some(d) = &f.default {
                        proptest::prop_assert!(f.ty.check(d).is_ok(), "{d:?}");
                    }
                }
            }
        }
    }
}
