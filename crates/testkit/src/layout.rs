//! The layout check (issue 20 item 3): which source files of a crate use which, whether
//! any of them form a circle, and whether a lower room uses a higher one.
//!
//! A *room* is a top-level module of a crate (`listen`, `net`, ...); rooms are ranked from
//! the bottom up, and a file may use files of its own room or of rooms below it. Files
//! are linked by the paths they name: `crate::a::b::item` and `super::item` (in `use`
//! trees, braces expanded, and inline in code) resolve to the file of the longest module
//! prefix that exists. Test modules (`tests.rs`, `*_tests.rs`, and what follows
//! `#[cfg(test)]` in a file) are left out: they only look in.
//!
//! `cargo test -p vouchmail-testkit --test layout` runs it over the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's source files and the links between them.
#[derive(Debug, Default)]
pub struct Graph {
    /// Module path (`["net", "tls"]`) of each file, by file (relative to `src/`).
    pub modules: BTreeMap<String, Vec<String>>,
    /// Which files each file uses.
    pub uses: BTreeMap<String, BTreeSet<String>>,
}

/// Reads every `.rs` file below `src` (a crate's `src/` folder).
pub fn read_crate(src: &Path) -> std::io::Result<Graph> {
    let mut files = Vec::new();
    collect(src, src, &mut files)?;
    let mut graph = Graph::default();
    for (rel, _) in &files {
        graph.modules.insert(rel.clone(), module_of(rel));
    }
    let by_module: BTreeMap<Vec<String>, String> =
        graph.modules.iter().map(|(file, module)| (module.clone(), file.clone())).collect();
    let known: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    for (rel, path) in &files {
        let text = std::fs::read_to_string(path)?;
        let own = &graph.modules[rel];
        let mut targets = BTreeSet::new();
        for reference in references(&strip_tests(&text)) {
            let absolute = match absolute_path(own, &reference, &known) {
                Some(p) => p,
                None => continue,
            };
            if let Some(file) = resolve(&by_module, &absolute) {
                if &file != rel {
                    targets.insert(file);
                }
            }
        }
        graph.uses.insert(rel.clone(), targets);
    }
    Ok(graph)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if name == "tests" || name.ends_with("_tests") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
    Ok(())
}

/// `a/b.rs` and `a/b/mod.rs` are module `a::b`; `lib.rs` and `main.rs` the root.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// Everything from the first `#[cfg(test)]` on is test code.
fn strip_tests(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        // Comments name paths without using them.
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The paths a file names (`use` trees expanded, and inline), as segment lists.
fn references(text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    // `use` statements, with their brace trees expanded.
    let mut rest = text;
    while let Some(i) = find_word(rest, "use") {
        let after = &rest[i + 3..];
        let Some(end) = after.find(';') else { break };
        let tree = normalize(&after[..end]);
        for path in expand(&tree) {
            found.push(path);
        }
        rest = &after[end..];
    }
    // Inline paths: `crate::x::y`, `super::x` and `child::x` anywhere.
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("::") {
        let at = from + i;
        from = at + 2;
        // The start of the path this `::` is in, if it is its first.
        let start = text[..at].rfind(|c: char| !is_ident(c)).map_or(0, |p| p + 1);
        if start == at || (start >= 2 && &text[start - 2..start] == "::") {
            continue;
        }
        if start > 0 && bytes[start - 1] == b'$' {
            continue;
        }
        let path: String = text[start..].chars().take_while(|c| is_ident(*c) || *c == ':').collect();
        found.push(path.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = at.checked_sub(1).map(|b| text.as_bytes()[b] as char);
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `a::{b::c,d}` into `[a,b,c]` and `[a,d]`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let Some(open) = tree.find('{') else {
        // `a::b as c` names `a::b`.
        let path = tree.split(' ').next().unwrap_or(tree);
        return vec![path.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect()];
    };
    let prefix = &tree[..open];
    let inner = tree[open + 1..].strip_suffix('}').unwrap_or(&tree[open + 1..]);
    let mut out = Vec::new();
    for part in split_top(inner) {
        for tail in expand(&part) {
            let mut path: Vec<String> = prefix.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
            if tail.first().is_some_and(|s| s == "self") {
                out.push(path);
                continue;
            }
            path.extend(tail);
            out.push(path);
        }
    }
    out
}

/// One space between words, none around `::`, braces and commas.
fn normalize(tree: &str) -> String {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut out = words.join(" ");
    for token in ["::", "{", "}", ","] {
        out = out.replace(&format!(" {token}"), token).replace(&format!("{token} "), token);
    }
    out
}

/// Splits at commas outside braces.
fn split_top(text: &str) -> Vec<String> {
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// `crate::a::b`, `super::b`, `self::b` or `b::c` (a child module) from module `own` as an
/// absolute path; `None` for paths into other crates.
fn absolute_path(own: &[String], reference: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let (first, rest) = reference.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some(own.iter().chain(rest).cloned().collect()),
        "super" => {
            // `super` in `a/b.rs` (module a::b) is `a`; several climb further.
            let mut base = own.to_vec();
            base.pop()?;
            let mut rest = rest;
            while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
                base.pop()?;
                rest = tail;
            }
            base.extend(rest.iter().cloned());
            Some(base)
        }
        _ => {
            let child: Vec<String> = own.iter().chain([first]).cloned().collect();
            modules.contains(&child).then(|| own.iter().chain(reference).cloned().collect())
        }
    }
}

/// The file of the longest module prefix of `path`.
fn resolve(by_module: &BTreeMap<Vec<String>, String>, path: &[String]) -> Option<String> {
    (0..=path.len()).rev().find_map(|n| by_module.get(&path[..n]).cloned())
}

impl Graph {
    /// The circles: groups of two or more files that reach each other.
    pub fn circles(&self) -> Vec<Vec<String>> {
        let files: Vec<&String> = self.uses.keys().collect();
        let index: BTreeMap<&String, usize> = files.iter().enumerate().map(|(i, f)| (*f, i)).collect();
        let edges: Vec<Vec<usize>> =
            files.iter().map(|f| self.uses[*f].iter().filter_map(|t| index.get(t).copied()).collect()).collect();
        strongly_connected(&edges)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| c.into_iter().map(|i| files[i].clone()).collect())
            .collect()
    }

    /// Arrows from a lower room up: `(from, to)` for each file that uses a file of a room
    /// ranked above its own. `rooms` lists the rooms bottom first, each a module path
    /// (`net`, or `smtp::client` for a room inside a folder); a file belongs to the room
    /// of the longest listed prefix of its module path.
    pub fn upward(&self, rooms: &[&str]) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (from, targets) in &self.uses {
            for to in targets {
                let (Some(a), Some(b)) = (self.room_of(from, rooms), self.room_of(to, rooms)) else { continue };
                if b > a {
                    found.push((from.clone(), to.clone()));
                }
            }
        }
        found
    }

    /// The rank of a file's room; the crate root ranks above all. None: in no room.
    fn room_of(&self, file: &str, rooms: &[&str]) -> Option<usize> {
        let module = &self.modules[file];
        if module.is_empty() {
            return Some(rooms.len());
        }
        rooms
            .iter()
            .enumerate()
            .filter(|(_, room)| {
                let path: Vec<&str> = room.split("::").collect();
                module.len() >= path.len() && module.iter().zip(&path).all(|(m, p)| m == p)
            })
            .max_by_key(|(_, room)| room.split("::").count())
            .map(|(rank, _)| rank)
    }

    /// Files in none of `rooms` (the crate root's own file aside).
    pub fn unranked(&self, rooms: &[&str]) -> BTreeSet<String> {
        self.modules.keys().filter(|file| self.room_of(file, rooms).is_none()).cloned().collect()
    }
}

/// Tarjan's algorithm, iteratively (no recursion depth to worry about).
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut components, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some((v, child)) = work.pop() {
            if child == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = edges[v].get(child) {
                work.push((v, child + 1));
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_expand() {
        let found = expand(&normalize("crate::a::{b::c, d as e,\n self}"));
        assert_eq!(found, vec![vec!["crate", "a", "b", "c"], vec!["crate", "a", "d"], vec!["crate", "a"]]);
    }

    #[test]
    fn super_climbs_from_the_files_module() {
        let own = vec!["listen".to_string(), "smtp".to_string(), "rcpt".to_string()];
        let known = BTreeSet::new();
        let path = absolute_path(&own, &["super".into(), "context".into()], &known).unwrap();
        assert_eq!(path, vec!["listen", "smtp", "context"]);
        let path = absolute_path(&own, &["super".into(), "super".into(), "x".into()], &known).unwrap();
        assert_eq!(path, vec!["listen", "x"]);
        assert_eq!(absolute_path(&own, &["tokio".into(), "net".into()], &known), None);
    }

    #[test]
    fn a_circle_of_three_is_found() {
        let mut graph = Graph::default();
        for (f, uses) in [("a.rs", vec!["b.rs"]), ("b.rs", vec!["c.rs"]), ("c.rs", vec!["a.rs"]), ("d.rs", vec![])] {
            graph.modules.insert(f.into(), module_of(f));
            graph.uses.insert(f.into(), uses.into_iter().map(String::from).collect());
        }
        let circles = graph.circles();
        assert_eq!(circles.len(), 1);
        assert_eq!(circles[0].len(), 3);
        assert_eq!(graph.upward(&["c", "b", "a"]), vec![("c.rs".to_string(), "a.rs".to_string())]);
    }
}
