//! `INFO` and `CLUSTER INFO` replies: `key:value` lines under `# Section` headers.

use std::collections::BTreeMap;

/// Every `key:value` line as a map (section headers and blank lines skipped).
pub fn info_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of `name:`.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':'))).map(str::trim)
}

/// The value of `name:` as an integer.
pub fn info_num(info: &str, name: &str) -> Option<i64> {
    info_field(info, name).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_skip_sections() {
        let info = info_fields("# Cluster\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n");
        assert_eq!(info.get("cluster_state").map(String::as_str), Some("ok"));
        assert_eq!(info.get("cluster_slots_assigned").map(String::as_str), Some("16384"));
        let text = "# Persistence\r\nrdb_saves:3\r\naof_rewrite_in_progress:0\r\n";
        assert_eq!(info_num(text, "rdb_saves"), Some(3));
        assert_eq!(info_field(text, "rdb"), None, "a prefix of a name is not the name");
    }

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Persistence\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\nrdb_saves:3\r\n";
        assert_eq!(info_field(info, "rdb_last_bgsave_status"), Some("ok"));
        assert_eq!(info_num(info, "rdb_saves"), Some(3));
        assert_eq!(info_field(info, "rdb_bgsave"), None);
        assert_eq!(info_num(info, "missing"), None);
    }
}
