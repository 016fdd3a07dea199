//! The layers of `src/` as ARCHITECTURE.md draws them: every top-level module sits in one row of
//! its "Layers" table and imports only modules of rows below its own, so no import cycle
//! between top-level modules can form. The table is read from ARCHITECTURE.md itself, so the
//! document and the code cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Row of each module, from the rows of the "## Layers" table: `| 3 | `gateway` | ... |`.
fn layers() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = text
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(row), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(row) = row.parse::<usize>() else {
            continue;
        };
        for module in modules.split(',') {
            let module = module.trim().trim_matches('`');
            assert!(
                rows.insert(module.to_string(), row).is_none(),
                "`{module}` is in two rows"
            );
        }
    }
    assert!(rows.len() > 5, "the Layers table was not found: {rows:?}");
    rows
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file belongs to, and whether it is test code (which may reach
/// anywhere): `tests.rs`, `testing.rs` and files under a `tests/` folder.
fn module_of(path: &Path) -> (String, bool) {
    let relative = path.strip_prefix(repo().join("src")).expect("under src");
    let first = relative
        .components()
        .next()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .unwrap_or_default();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let test = name == "tests.rs"
        || name == "testing.rs"
        || relative.components().any(|c| c.as_os_str() == "tests");
    (first, test)
}

/// The top-level modules `text` names through `crate::`, outside its `#[cfg(test)]` module.
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            names.extend(group.split(',').filter_map(|item| {
                let head = item.trim().split("::").next()?.trim();
                (!head.is_empty()).then(|| head.to_string())
            }));
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push(head);
        }
    }
    names
}

#[test]
fn every_import_runs_down_the_layers() {
    let rows = layers();
    let mut files = Vec::new();
    sources(&repo().join("src"), &mut files);
    let mut wrong = Vec::new();
    for path in &files {
        let (module, test) = module_of(path);
        if test || module == "main" || module == "lib" {
            continue;
        }
        let Some(&row) = rows.get(&module) else {
            wrong.push(format!(
                "`{module}` ({}) is in no row of the Layers table",
                path.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).expect("readable");
        for imported in imports(&text) {
            if imported == module {
                continue;
            }
            match rows.get(&imported) {
                Some(&below) if below > row => {}
                Some(&other) => wrong.push(format!(
                    "{} (`{module}`, row {row}) imports `{imported}` (row {other})",
                    path.strip_prefix(repo()).unwrap_or(path).display()
                )),
                None => wrong.push(format!("`{imported}` is in no row of the Layers table")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_import_reader_sees_every_form() {
    let text = "use crate::a::X;\nuse crate::{b::Y, c};\nfn f() { crate::d::g() }\n#[cfg(test)]\nmod tests { use crate::e; }";
    assert_eq!(imports(text), ["a", "b", "c", "d"]);
}
