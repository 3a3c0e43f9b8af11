use super::*;

fn request(args: &[&str]) -> Request {
    Request::from_args(args)
}

fn options(args: &[&str]) -> Result<Options, ProxyError> {
    parse_options(&request(args), |id| id == 7)
}

fn text(result: Result<impl std::fmt::Debug, ProxyError>) -> String {
    String::from_utf8_lossy(&result.expect_err("an error").to_resp()).into_owned()
}

#[test]
fn options_parse_case_insensitively_with_redis_errors() {
    let parsed =
        options(&["CLIENT", "TRACKING", "on", "Redirect", "7", "bcast", "PREFIX", "a", "prefix", "b", "noloop"]);
    let expected = Options {
        redirect: Some(7),
        bcast: true,
        noloop: true,
        prefixes: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        ..Options::default()
    };
    assert_eq!(parsed.expect("valid"), expected);
    let twice = options(&["CLIENT", "TRACKING", "on", "REDIRECT", "7", "REDIRECT", "7"]);
    assert_eq!(text(twice), "-ERR A client can only redirect to a single other client\r\n");
    let not_number = options(&["CLIENT", "TRACKING", "on", "REDIRECT", "x"]);
    assert_eq!(text(not_number), "-ERR value is not an integer or out of range\r\n");
    // Checked for OFF too, as Redis does.
    let gone = options(&["CLIENT", "TRACKING", "off", "REDIRECT", "8"]);
    assert_eq!(text(gone), "-ERR The client ID you want redirect to does not exist\r\n");
    assert_eq!(text(options(&["CLIENT", "TRACKING", "on", "PREFIX"])), "-ERR syntax error\r\n");
    assert_eq!(text(options(&["CLIENT", "TRACKING", "on", "SOMETIMES"])), "-ERR syntax error\r\n");
}

#[test]
fn on_checks_follow_redis_order_and_texts() {
    let check =
        |current: Option<&Tracking>, args: &[&str]| text(check_options(current, &options(args).expect("parsed")));
    let on = |extra: &[&'static str]| [&["CLIENT", "TRACKING", "on"][..], extra].concat();
    assert_eq!(check(None, &on(&["PREFIX", "a"])), "-ERR PREFIX option requires BCAST mode to be enabled\r\n");
    let bcast = Tracking { bcast: true, prefixes: [Bytes::from_static(b"ab")].into(), ..Tracking::default() };
    assert!(check(Some(&bcast), &on(&[])).starts_with("-ERR You can't switch BCAST mode on/off"));
    assert_eq!(check(None, &on(&["BCAST", "OPTIN"])), "-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n");
    assert_eq!(check(None, &on(&["OPTIN", "OPTOUT"])), "-ERR You can't specify both OPTIN mode and OPTOUT mode\r\n");
    let optout = Tracking { optout: true, ..Tracking::default() };
    assert!(check(Some(&optout), &on(&["OPTIN"])).starts_with("-ERR You can't switch OPTIN/OPTOUT mode"));
    assert_eq!(
        check(Some(&bcast), &on(&["BCAST", "PREFIX", "a"])),
        "-ERR Prefix 'a' overlaps with an existing prefix 'ab'. Prefixes for a single client must not overlap.\r\n"
    );
    assert_eq!(
        check(None, &on(&["BCAST", "PREFIX", "x", "PREFIX", "xy"])),
        "-ERR Prefix 'x' overlaps with another provided prefix 'xy'. Prefixes for a single client must not overlap.\r\n"
    );
    assert!(check_options(Some(&bcast), &options(&on(&["BCAST", "PREFIX", "b"])).expect("parsed")).is_ok());
}

#[test]
fn trackinginfo_has_redis_shapes_in_both_protocols() {
    let off = tracking_info(None, Protocol::Resp2);
    assert_eq!(&off[..], b"*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n");
    let off3 = tracking_info(None, Protocol::Resp3);
    assert_eq!(&off3[..], b"%3\r\n$5\r\nflags\r\n~1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n");
    let optin = Tracking { optin: true, caching: true, noloop: true, redirect: 5, ..Tracking::default() };
    let info = tracking_info(Some(&optin), Protocol::Resp2);
    let expected = b"*6\r\n$5\r\nflags\r\n*4\r\n$2\r\non\r\n$5\r\noptin\r\n$11\r\ncaching-yes\r\n$6\r\nnoloop\r\n\
$8\r\nredirect\r\n:5\r\n$8\r\nprefixes\r\n*0\r\n";
    assert_eq!(&info[..], &expected[..]);
    let bcast = Tracking {
        bcast: true,
        prefixes: [Bytes::from_static(b"b"), Bytes::from_static(b"a")].into(),
        ..Tracking::default()
    };
    let info = tracking_info(Some(&bcast), Protocol::Resp2);
    assert!(info.ends_with(b"$8\r\nprefixes\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"), "prefixes sorted");
}

#[test]
fn messages_are_pushes_in_resp3_and_pubsub_messages_in_resp2() {
    let keys = Invalidation::Keys(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    let pushes = frames(&keys, Protocol::Resp3);
    assert_eq!(pushes.len(), 2, "one message per key in the default mode");
    assert_eq!(&pushes[0][..], b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n");
    let prefixed = Invalidation::Prefixed(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    assert_eq!(
        &frames(&prefixed, Protocol::Resp2)[0][..],
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert_eq!(&frames(&Invalidation::Flush, Protocol::Resp3)[0][..], b">2\r\n$10\r\ninvalidate\r\n_\r\n");
    assert_eq!(
        &frames(&Invalidation::Flush, Protocol::Resp2)[0][..],
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
    );
}
