//! A provisioned app on the test cluster, reached as its real roles: the shared fixtures
//! (`bulkhead-fixtures`) and the app the data layer's tests use.

pub use bulkhead_fixtures::{ALL_LEVELS, App, app_id, manifest, tid};

pub const HELPDESK: &str = r#"app: APP
entities:
  customer:
    fields:
      name: { type: text, required: true, unique: true }
  ticket:
    owner: author
    fields:
      title: { type: text, required: true }
      prio: { type: int, default: 3 }
      status: { type: enum, values: [open, closed], default: open }
      customer: { type: ref, entity: customer }
      country: { type: ref, entity: country }
      meta: json
      due: date
      amount: numeric
      at: timestamp
      big: bigint
      done: bool
  country:
    cross_tenant: true
    fields:
      code: { type: text, required: true, unique: true }
cross_tenant_reads: [ticket]
"#;
