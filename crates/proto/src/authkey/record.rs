//! The `AS=` TXT record that names a domain's Authentication Server (SPEC 7.3). DNS data
//! comes from the network: the parser takes any text and never panics.

/// SPEC 7.3: the port of an `AS=` record without one.
pub const DEFAULT_PORT: u16 = 2884;

/// Where a domain's Authentication Server is, from its TXT records (SPEC 7.3:
/// `AS=<host>[:<port>]`). The first such record counts; None when there is none.
pub fn parse_as_record(records: &[String]) -> Option<(String, u16)> {
    records.iter().find_map(|record| {
        let record = record.trim();
        let value = record.get(..3).filter(|p| p.eq_ignore_ascii_case("AS=")).and(record.get(3..))?.trim();
        let (host, port) = match value.rsplit_once(':') {
            // An IPv6 literal needs brackets to carry a port.
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, port.parse().ok()?),
            _ => (value, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty() && port != 0).then(|| (host.to_ascii_lowercase(), port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_records_name_host_and_port() {
        let records = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_as_record(&records(&["v=spf1 -all", "AS=as.Galkam.test"])),
            Some(("as.galkam.test".into(), 2884))
        );
        assert_eq!(parse_as_record(&records(&["as=127.0.0.2:4000"])), Some(("127.0.0.2".into(), 4000)));
        assert_eq!(parse_as_record(&records(&["AS=[2001:db8::1]:5"])), Some(("2001:db8::1".into(), 5)));
        assert_eq!(parse_as_record(&records(&["AS=2001:db8::1"])), Some(("2001:db8::1".into(), 2884)));
        assert_eq!(parse_as_record(&records(&["AS=", "AS=h:0", "AS=h:x"])), None);
        assert_eq!(parse_as_record(&records(&["v=spf1"])), None);
    }
}
