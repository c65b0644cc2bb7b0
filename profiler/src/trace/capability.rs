//! Capability names, as the trace and every output spell them (`CAP_CHOWN`).
use caps::Capability;

pub fn capability_name(number: u32) -> String {
    caps::all()
        .into_iter()
        .find(|c| c.index() as u32 == number)
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("CAP_{number}"))
}

pub fn parse_capability(name: &str) -> anyhow::Result<Capability> {
    let canonical = caps::to_canonical(name);
    canonical
        .parse::<Capability>()
        .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip() {
        assert_eq!(capability_name(0), "CAP_CHOWN");
        assert_eq!(capability_name(21), "CAP_SYS_ADMIN");
        assert_eq!(parse_capability("CAP_CHOWN").unwrap().index(), 0);
        assert!(parse_capability("CAP_NOPE").is_err());
    }
}
