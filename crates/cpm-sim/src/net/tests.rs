//! Names, tags and subnet choice.

use std::net::Ipv4Addr;

use super::*;

#[test]
fn tags_name_their_owner_and_fit_interface_names() {
    for (pid, n) in [(1, 0), (4_194_304, 35), (123_456, 1295)] {
        let tag = tag_for(pid, n);
        assert_eq!(owner_of(&tag), Some(pid), "{tag}");
        assert!(bridge_name(&tag).len() <= 15, "{}", bridge_name(&tag));
        assert!(veth_name(&tag, 254).len() < 15, "{}", veth_name(&tag, 254));
    }
    assert_ne!(tag_for(7, 1), tag_for(7, 2));
    assert_eq!(owner_of("no-separator"), None);
}

#[test]
fn a_subnet_in_use_is_skipped() {
    let used = [Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 1, 9)];
    assert_eq!(pick_subnet(&used, 0), Some([10, 200, 2]));
    assert_eq!(pick_subnet(&[], 5), Some([10, 200, 5]));
    // Candidates wrap around inside 10.200.0.0/13.
    assert_eq!(subnet(8 * 256), [10, 200, 0]);
    assert_eq!(subnet(8 * 256 - 1), [10, 207, 255]);
}
