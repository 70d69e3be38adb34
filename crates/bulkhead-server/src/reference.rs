//! `docs/config-reference.md`, generated from the doc comments of the configuration structs
//! (their source text, so the reference and the code cannot drift: a test fails when the
//! checked-in file is stale; `BULKHEAD_WRITE_REFERENCE=1 cargo test -p bulkhead-server reference`
//! rewrites it).

/// `(section, struct, source)`: the top level first, then each table.
const SECTIONS: &[(&str, &str, &str)] = &[
    ("(top level)", "Config", include_str!("config.rs")),
    ("[log]", "LogConfig", include_str!("config.rs")),
    ("[vault]", "VaultConfig", include_str!("config.rs")),
    ("[files]", "FilesConfig", include_str!("config.rs")),
    ("[serve]", "ServeConfig", include_str!("config.rs")),
    (
        "[search]",
        "SearchConfig",
        include_str!("../../bulkhead-search/src/lib.rs"),
    ),
    (
        "[egress]",
        "EgressSettings",
        include_str!("../../bulkhead-egress/src/lib.rs"),
    ),
    (
        "[deployment]",
        "DeploymentProfile",
        include_str!("config.rs"),
    ),
    (
        "[compartments]",
        "CompartmentsConfig",
        include_str!("config.rs"),
    ),
];

/// `(name, type, doc)` of each `pub` field of `pub struct name`, and the struct's own doc.
fn fields(source: &str, name: &str) -> (String, Vec<(String, String, String)>) {
    let lines: Vec<&str> = source.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.trim_start() == format!("pub struct {name} {{"))
    else {
        return (String::new(), Vec::new());
    };
    let mut struct_doc = Vec::new();
    for l in lines[..start].iter().rev() {
        let t = l.trim();
        if let Some(d) = t.strip_prefix("///") {
            struct_doc.push(d.trim().to_owned());
        } else if !t.starts_with("#[") {
            break;
        }
    }
    struct_doc.reverse();
    let mut out = Vec::new();
    let mut doc = Vec::new();
    for l in &lines[start + 1..] {
        let t = l.trim();
        if t == "}" {
            break;
        }
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_owned());
        } else if let Some(rest) = t.strip_prefix("pub ") {
            if let Some((field, ty)) = rest.split_once(':') {
                out.push((
                    field.trim().to_owned(),
                    ty.trim().trim_end_matches(',').to_owned(),
                    doc.join(" "),
                ));
            }
            doc.clear();
        } else if !t.starts_with("#[") {
            doc.clear();
        }
    }
    (struct_doc.join(" "), out)
}

/// The whole reference.
pub fn render() -> String {
    let mut md = String::from(
        "# Configuration reference\n\n\
         Generated from the doc comments of the configuration structs (`bulkhead-server/src/reference.rs`);\n\
         do not edit by hand. Every key can also be set from the environment: `BULKHEAD_<KEY>`,\n\
         with `__` between a table and its key (`BULKHEAD_SERVE__HEALTH_FAILURES=5`). See\n\
         `bulkhead.example.toml` for a commented example.\n",
    );
    for (section, name, source) in SECTIONS {
        let (doc, fields) = fields(source, name);
        md.push_str(&format!("\n## {section}\n\n"));
        if !doc.is_empty() {
            md.push_str(&format!("{doc}\n\n"));
        }
        md.push_str("| key | type | meaning |\n|---|---|---|\n");
        for (field, ty, doc) in fields {
            md.push_str(&format!(
                "| `{field}` | `{}` | {} |\n",
                ty.replace('|', "\\|"),
                doc.replace('|', "\\|")
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_reference_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/config-reference.md"
        );
        let fresh = super::render();
        if std::env::var_os("BULKHEAD_WRITE_REFERENCE").is_some() {
            std::fs::write(path, &fresh).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "docs/config-reference.md is stale: run BULKHEAD_WRITE_REFERENCE=1 cargo test -p bulkhead-server reference"
        );
        for (_, name, source) in super::SECTIONS {
            let (_, fields) = super::fields(source, name);
            assert!(!fields.is_empty(), "{name} has no documented fields");
            for (field, _, doc) in fields {
                assert!(!doc.is_empty(), "{name}.{field} has no doc comment");
            }
        }
    }
}
