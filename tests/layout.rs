//! The shape of the code: every import points down. A module (one file)
//! must never import a module that imports it back, directly or through
//! others; this test reads `src/` and fails naming the cycle and where each
//! of its imports is.
//!
//! A module's edges are the paths it names: `crate::…`, `super::…`,
//! `self::…`, and a child module's name (a `mod.rs` re-exporting or calling
//! its children). A path goes to the longest prefix that is a module file,
//! so `super::Thing` defined in a `mod.rs` is an edge to that `mod.rs`.
//! Test modules (`#[cfg(test)]`) are left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where an edge was seen: file and line.
type Site = (PathBuf, usize);

struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/lib.rs` → `` (the root).
fn module_path(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?.strip_suffix(".rs")?.to_string();
    match last.as_str() {
        "main" if parts.is_empty() => None,
        "lib" if parts.is_empty() => Some(String::new()),
        "mod" => Some(parts.join("::")),
        // Test-only files (`#[cfg(test)] mod tests;`).
        "tests" => None,
        _ => {
            parts.push(last);
            Some(parts.join("::"))
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments, strings and `#[cfg(test)]` items,
/// line by line.
fn code_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skipping_test = false;
    let mut depth = 0i32;
    let mut pending_cfg_test = false;
    for line in text.lines() {
        let mut code = String::new();
        let mut in_str = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    in_str = false;
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '/' if chars.peek() == Some(&'/') => break,
                _ => code.push(c),
            }
        }
        let trimmed = code.trim();
        if !skipping_test && trimmed.starts_with("#[cfg(test)]") {
            pending_cfg_test = true;
            out.push(String::new());
            continue;
        }
        if pending_cfg_test && !trimmed.is_empty() {
            pending_cfg_test = false;
            // The item after `#[cfg(test)]`: skip it to its end.
            if trimmed.ends_with(';') {
                out.push(String::new());
                continue;
            }
            skipping_test = true;
            depth = 0;
        }
        if skipping_test {
            depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
            if depth <= 0 && code.contains('}') {
                skipping_test = false;
            }
            out.push(String::new());
            continue;
        }
        out.push(code);
    }
    out
}

/// Every path in `code` that starts with an identifier and has `::`,
/// with brace groups expanded: `crate::a::{b, c::D}` → `crate::a::b`,
/// `crate::a::c::D`.
fn paths(code: &str) -> Vec<(usize, String)> {
    fn expand(at: usize, prefix: &str, group: &str, out: &mut Vec<(usize, String)>) {
        // Split the group on top-level commas.
        let mut depth = 0;
        let mut start = 0;
        let bytes = group.as_bytes();
        for i in 0..=bytes.len() {
            let end = i == bytes.len();
            if !end {
                match bytes[i] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
            }
            if end || (bytes[i] == b',' && depth == 0) {
                let item = group[start..i].trim();
                start = i + 1;
                if item.is_empty() || item == "self" || item == "*" {
                    if item == "self" || item == "*" {
                        out.push((at, prefix.to_string()));
                    }
                    continue;
                }
                match item.find('{') {
                    Some(b) => {
                        let inner = &item[b + 1..item.rfind('}').unwrap_or(item.len())];
                        let head = item[..b].trim_end_matches("::");
                        expand(at, &format!("{prefix}::{head}"), inner, out);
                    }
                    None => {
                        let name = item.split(" as ").next().unwrap().trim();
                        out.push((at, format!("{prefix}::{name}")));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts = (b[i].is_ascii_alphabetic() || b[i] == b'_')
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b':'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b':') {
            j += 1;
        }
        let path = code[i..j].trim_end_matches(':');
        if path.contains("::") {
            if code[j..].starts_with('{') {
                let mut depth = 0;
                let mut k = j;
                while k < b.len() {
                    match b[k] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    k += 1;
                }
                expand(i, path, &code[j + 1..k.min(b.len())], &mut out);
                i = k;
                continue;
            }
            out.push((i, path.to_string()));
        }
        i = j;
    }
    out
}

/// The module a path in module `here` names, if it is one of ours.
fn resolve(here: &str, path: &str, modules: &BTreeMap<String, Module>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = match segs[0] {
        "crate" => {
            segs.remove(0);
            Vec::new()
        }
        "self" | "super" => {
            let mut b: Vec<String> = if here.is_empty() {
                Vec::new()
            } else {
                here.split("::").map(String::from).collect()
            };
            while let Some(&s) = segs.first() {
                match s {
                    "self" => {}
                    "super" => {
                        b.pop()?;
                    }
                    _ => break,
                }
                segs.remove(0);
            }
            b
        }
        child if modules[here].children.contains(child) => {
            if here.is_empty() {
                Vec::new()
            } else {
                here.split("::").map(String::from).collect()
            }
        }
        _ => return None,
    };
    let mut found = base.join("::");
    for s in segs {
        base.push(s.to_string());
        let candidate = base.join("::");
        if modules.contains_key(&candidate) {
            found = candidate;
        } else {
            break;
        }
    }
    modules.contains_key(&found).then_some(found)
}

/// The first import cycle among the module files under `src`, described
/// with where each of its imports is; None when every import points down.
fn first_cycle(src: &Path) -> Option<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for file in files {
        let Some(path) = module_path(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = code_lines(&text);
        let children = lines
            .iter()
            .filter_map(|l| {
                let l = l
                    .trim()
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
                Some(name.trim().to_string())
            })
            .collect();
        modules.insert(
            path.clone(),
            Module {
                file: file.clone(),
                children,
            },
        );
        texts.insert(path, lines);
    }

    // Edges with the first place each was seen.
    let mut edges: BTreeMap<String, BTreeMap<String, Site>> = BTreeMap::new();
    for (here, lines) in &texts {
        let code = lines.join("\n");
        for (at, p) in paths(&code) {
            if let Some(to) = resolve(here, &p, &modules)
                && to != *here
            {
                let line = code[..at].matches('\n').count() + 1;
                edges
                    .entry(here.clone())
                    .or_default()
                    .entry(to)
                    .or_insert((modules[here].file.clone(), line));
            }
        }
    }

    // Any cycle: a module that reaches itself.
    let name = |m: &str| {
        if m.is_empty() {
            "crate".to_string()
        } else {
            m.to_string()
        }
    };
    for start in modules.keys() {
        // Breadth-first search for a path back to `start`.
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut cycle = None;
        'search: while let Some(m) = queue.pop_front() {
            for to in edges.get(&m).into_iter().flat_map(|e| e.keys()) {
                if to == start {
                    let mut path = vec![m.clone()];
                    let mut at = m.clone();
                    while let Some(p) = prev.get(&at) {
                        path.push(p.clone());
                        at = p.clone();
                    }
                    path.reverse();
                    cycle = Some(path);
                    break 'search;
                }
                if !prev.contains_key(to) && to != start {
                    prev.insert(to.clone(), m.clone());
                    queue.push_back(to.clone());
                }
            }
        }
        if let Some(mut path) = cycle {
            path.push(start.clone());
            let steps: Vec<String> = path
                .windows(2)
                .map(|w| {
                    let (file, line) = &edges[&w[0]][&w[1]];
                    format!(
                        "{} -> {} ({}:{line})",
                        name(&w[0]),
                        name(&w[1]),
                        file.strip_prefix(src.parent().unwrap()).unwrap().display()
                    )
                })
                .collect();
            return Some(steps.join(", "));
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    if let Some(cycle) = first_cycle(&src) {
        panic!("import cycle: {cycle}");
    }
}

#[test]
fn the_cycle_check_finds_cycles_through_siblings_and_facades() {
    let write = |dir: &Path, files: &[(&str, &str)]| {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    };
    let lib = "mod a;\nmod b;\nmod p;\n";
    type Files<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Files, Option<&str>); 4] = [
        (
            &[
                ("a.rs", "use crate::b::X;"),
                ("b.rs", "pub struct X;"),
                ("p/mod.rs", "mod c;\npub use c::Y;"),
                ("p/c.rs", "pub struct Y;"),
            ],
            None,
        ),
        (
            &[
                ("a.rs", "use crate::b::X;"),
                ("b.rs", "pub struct X; fn f() { crate::a::g() }"),
                ("p/mod.rs", ""),
                ("p/c.rs", ""),
            ],
            Some("a -> b"),
        ),
        // A child using what its mod.rs defines, while mod.rs uses the child.
        (
            &[
                ("a.rs", ""),
                ("b.rs", ""),
                (
                    "p/mod.rs",
                    "mod c;\npub struct Z;\npub fn run() { c::go() }",
                ),
                ("p/c.rs", "use super::Z;\npub fn go() {}"),
            ],
            Some("p -> p::c"),
        ),
        // Test modules may reach anywhere.
        (
            &[
                ("a.rs", "use crate::b::X;"),
                (
                    "b.rs",
                    "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
                ),
                ("p/mod.rs", ""),
                ("p/c.rs", ""),
            ],
            None,
        ),
    ];
    for (files, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[("lib.rs", lib)]);
        write(dir.path(), files);
        let got = first_cycle(dir.path());
        match (want, &got) {
            (None, None) => {}
            (Some(w), Some(g)) if g.contains(w) => {}
            _ => panic!("{files:?}: expected {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn the_cycle_check_sees_paths_and_groups() {
    let got: Vec<String> =
        paths("use crate::a::{b, c::{D, e}, self}; let x = super::f::g(); std::io::x;")
            .into_iter()
            .map(|(_, p)| p)
            .collect();
    assert_eq!(
        got,
        vec![
            "crate::a::b",
            "crate::a::c::D",
            "crate::a::c::e",
            "crate::a",
            "super::f::g",
            "std::io::x"
        ]
    );
    let lines = code_lines(
        "use a::b; // crate::c::d\nlet s = \"crate::x\";\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\nuse y::z;",
    );
    assert_eq!(lines[0].trim(), "use a::b;");
    assert!(!lines[1].contains("crate::x"));
    assert!(lines[4].is_empty());
    assert_eq!(lines[6], "use y::z;");
}

/// The README's code map names every source file: a file at the top of
/// `src/` in a row's first cell, a file in a folder (its stem, or its
/// folder's name for a nested folder) somewhere in that folder's row.
#[test]
fn the_readme_code_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let map = readme
        .split("Code map (`src/`):")
        .nth(1)
        .expect("README has a code map");
    let rows: Vec<(&str, &str)> = map
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let mut cells = l.trim_matches('|').splitn(2, '|');
            Some((cells.next()?, cells.next()?))
        })
        .collect();
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let named = match parts.as_slice() {
            [top] => rows
                .iter()
                .any(|(path, _)| path.contains(&format!("`{top}`"))),
            [folder, rest @ ..] => {
                let name = match rest {
                    [file] => file.trim_end_matches(".rs").to_string(),
                    [sub, ..] => sub.clone(),
                    [] => unreachable!(),
                };
                let leaf = rest.last().unwrap();
                let row = rows
                    .iter()
                    .find(|(path, _)| path.contains(&format!("`{folder}/`")));
                // A folder's mod.rs and test-only files need no mention.
                leaf == "mod.rs" && rest.len() == 1
                    || leaf == "tests.rs"
                    || row.is_some_and(|(_, text)| {
                        text.contains(&format!("`{name}`"))
                            || text.contains(&format!("`{name}.rs`"))
                            || text.contains(&format!("`{name}/`"))
                    })
            }
            [] => unreachable!(),
        };
        if !named {
            missing.push(rel.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's code map does not name: {missing:?}"
    );
}
