//! The tree view's names: each row indented under the nearest ancestor
//! that is itself a row.

use crate::snapshot::CgroupRow;

/// A row's name in the tree: indented under the nearest ancestor that is
/// itself a row, and named relative to it (`system.slice/web.service`
/// when `/system.slice` has no row of its own). `rows` is in tree order.
pub fn tree_name(rows: &[&CgroupRow], i: usize) -> String {
    let mut depth = 0;
    let mut rel = rows[i].path.trim_start_matches('/').to_string();
    let mut at = i;
    let mut first = true;
    // Walk up the displayed ancestors, which precede the row in tree order.
    while let Some(a) = (0..at)
        .rev()
        .find(|&j| is_under(&rows[at].path, &rows[j].path))
    {
        if first {
            rel = rows[i].path[rows[a].path.len()..]
                .trim_start_matches('/')
                .to_string();
            first = false;
        }
        depth += 1;
        at = a;
    }
    if depth == 0 {
        format!("/{rel}")
    } else {
        format!("{}└ {rel}", "  ".repeat(depth - 1))
    }
}

fn is_under(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_names_indent_under_the_nearest_shown_ancestor() {
        let paths = [
            "/system.slice",
            "/system.slice/web.service",
            "/system.slice/web.service/worker",
            "/user.slice/user-1000.slice/session-1.scope",
            "/zz",
        ];
        let rows: Vec<CgroupRow> = paths
            .iter()
            .map(|p| CgroupRow {
                path: (*p).into(),
                ..Default::default()
            })
            .collect();
        let refs: Vec<&CgroupRow> = rows.iter().collect();
        let names: Vec<String> = (0..refs.len()).map(|i| tree_name(&refs, i)).collect();
        assert_eq!(
            names,
            [
                "/system.slice",
                "└ web.service",
                "  └ worker",
                "/user.slice/user-1000.slice/session-1.scope",
                "/zz",
            ]
        );
    }
}
