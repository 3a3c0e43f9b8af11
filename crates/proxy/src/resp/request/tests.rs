use super::*;

fn decoder() -> RequestDecoder {
    RequestDecoder::new(Limits::default())
}

fn args(request: &Request) -> Vec<Vec<u8>> {
    (0..request.argc()).map(|i| request.arg(i).to_vec()).collect()
}

fn decode_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
    let mut buf = BytesMut::from(input);
    let mut decoder = decoder();
    let mut out = Vec::new();
    while let Some(request) = decoder.decode(&mut buf)? {
        out.push(args(&request));
    }
    Ok(out)
}

fn v(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn multibulk_requests_keep_their_bytes() {
    let input = b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*1\r\n$4\r\nPING\r\n";
    let mut buf = BytesMut::from(&input[..]);
    let mut decoder = decoder();
    let first = decoder.decode(&mut buf).expect("valid").expect("complete");
    assert_eq!(&first.bytes()[..], b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n");
    assert_eq!(args(&first), v(&["GET", "foo"]));
    let second = decoder.decode(&mut buf).expect("valid").expect("complete");
    assert_eq!(args(&second), v(&["PING"]));
    assert!(decoder.decode(&mut buf).expect("valid").is_none());
}

#[test]
fn partial_requests_resume_byte_by_byte() {
    let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
    let mut decoder = decoder();
    let mut buf = BytesMut::new();
    for (i, byte) in input.iter().enumerate() {
        buf.put_u8(*byte);
        let got = decoder.decode(&mut buf).expect("valid");
        if i + 1 < input.len() {
            assert!(got.is_none(), "complete too early at {i}");
        } else {
            assert_eq!(args(&got.expect("complete")), v(&["SET", "k", "hello"]));
        }
    }
}

#[test]
fn inline_commands_follow_redis_quoting() {
    assert_eq!(decode_all(b"PING\r\n").expect("valid"), vec![v(&["PING"])]);
    assert_eq!(decode_all(b"set k  v\n").expect("valid"), vec![v(&["set", "k", "v"])]);
    assert_eq!(decode_all(b"SET \"a b\" 'c d'\r\n").expect("valid"), vec![v(&["SET", "a b", "c d"])]);
    assert_eq!(decode_all(b"ECHO \"\\x41\\n\"\r\n").expect("valid"), vec![vec![b"ECHO".to_vec(), b"A\n".to_vec()]]);
    assert_eq!(decode_all(b"\r\n\r\nPING\r\n").expect("valid"), vec![v(&["PING"])]);
    assert_eq!(decode_all(b"ECHO \"abc\r\n"), Err(ProtocolError::UnbalancedQuotes));
    // A NUL ends the line, as in Redis' C-string splitting; it must never stall the decoder.
    assert_eq!(decode_all(b"\x00\x01garbage\r\nPING\r\n").expect("valid"), vec![v(&["PING"])]);
    assert_eq!(decode_all(b"GET a\x00b\r\n").expect("valid"), vec![v(&["GET", "a"])]);
    assert_eq!(decode_all(b"\x0b a\x0bb\r\n").expect("valid"), vec![vec![b"a\x0bb".to_vec()]]);
    assert_eq!(decode_all(b"ECHO \"a\"b\r\n"), Err(ProtocolError::UnbalancedQuotes));
}

#[test]
fn inline_request_is_reencoded_as_resp() {
    let mut buf = BytesMut::from(&b"get foo\r\n"[..]);
    let request = decoder().decode(&mut buf).expect("valid").expect("complete");
    assert_eq!(&request.bytes()[..], b"*2\r\n$3\r\nget\r\n$3\r\nfoo\r\n");
}

#[test]
fn empty_multibulk_is_skipped() {
    assert_eq!(decode_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").expect("valid"), vec![v(&["PING"])]);
    // Any count ≤ 0 is skipped, as Redis' processMultibulkBuffer does; a count that is no number
    // is still an error.
    assert_eq!(decode_all(b"*-10\r\n*1\r\n$4\r\nPING\r\n").expect("valid"), vec![v(&["PING"])]);
    assert!(decode_all(b"*-x\r\n").is_err());
    assert!(decode_all(b"*--1\r\n").is_err());
}

#[test]
fn malformed_requests_get_redis_errors() {
    assert_eq!(decode_all(b"*x\r\n"), Err(ProtocolError::InvalidMultibulkLength));
    assert_eq!(decode_all(b"*1\r\n+PING\r\n"), Err(ProtocolError::ExpectedBulk(b'+')));
    assert_eq!(decode_all(b"*1\r\n$-3\r\n"), Err(ProtocolError::InvalidBulkLength));
    assert_eq!(decode_all(b"*1\r\n$3\r\nPINGX\r\n"), Err(ProtocolError::MissingCrlf));
    assert_eq!(ProtocolError::ExpectedBulk(b'+').to_string(), "expected '$', got '+'");
}

#[test]
fn limits_refuse_before_buffering() {
    let limits = Limits { max_request_bytes: 100, max_array_len: 3 };
    let mut buf = BytesMut::from(&b"*4\r\n"[..]);
    assert_eq!(RequestDecoder::new(limits).decode(&mut buf).err(), Some(ProtocolError::InvalidMultibulkLength));
    // Only the header of a huge bulk has arrived: it is refused at once.
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1000000\r\n"[..]);
    assert_eq!(RequestDecoder::new(limits).decode(&mut buf).err(), Some(ProtocolError::InvalidBulkLength));
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$95\r\n"[..]);
    assert_eq!(RequestDecoder::new(limits).decode(&mut buf).err(), Some(ProtocolError::RequestTooBig(100)));
    let long_inline = vec![b'a'; MAX_LINE + 10];
    assert_eq!(decode_all(&long_inline), Err(ProtocolError::InlineTooBig));
    // As Redis: a line whose end is in the buffer is taken whatever its length; a buffer of
    // exactly MAX_LINE bytes without one still waits for more.
    let mut whole = b"ECHO ".to_vec();
    whole.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
    whole.extend_from_slice(b"\r\n");
    assert_eq!(decode_all(&whole).map(|r| r[0][1].len()), Ok(MAX_LINE + 10));
    assert_eq!(decode_all(&vec![b'a'; MAX_LINE]), Ok(Vec::new()));
    let mut long_count = b"*".to_vec();
    long_count.extend(std::iter::repeat_n(b'1', MAX_LINE));
    assert_eq!(decode_all(&long_count), Err(ProtocolError::CountTooBig));
}

#[test]
fn encode_command_round_trips() {
    let request = Request::from_args(&["MGET", "a", ""]);
    assert_eq!(&request.bytes()[..], b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$0\r\n\r\n");
    assert_eq!(args(&request), v(&["MGET", "a", ""]));
}

#[test]
fn arbitrary_bytes_never_stall_or_panic_the_decoder() {
    // A deterministic xorshift stream of inputs biased towards RESP-looking bytes.
    let alphabet = b"*$+-:\r\n0123456789-\"' \\x\x00abcGETSET";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let limits = Limits { max_request_bytes: 4096, max_array_len: 64 };
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let input: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        let mut buf = BytesMut::from(&input[..]);
        let mut decoder = RequestDecoder::new(limits);
        // Every successful decode consumes bytes, so this many rounds always suffice.
        for _ in 0..=input.len() {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => assert!(request.argc() > 0),
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn long_and_zero_padded_headers_read_as_short_ones() {
    // One to nine digits take the short path, ten or more the general one: both read the same,
    // whole or byte by byte, and a count of more than the inline arguments keeps them all.
    let value = "v".repeat(12);
    let mut input = b"*0000000006\r\n$3\r\nSET\r\n$01\r\nk\r\n".to_vec();
    input.extend_from_slice(format!("$0000000012\r\n{value}\r\n$2\r\nEX\r\n$000000001\r\n9\r\n$0\r\n\r\n").as_bytes());
    let expected = vec![v(&["SET", "k", &value, "EX", "9", ""])];
    assert_eq!(decode_all(&input).expect("valid"), expected);
    let mut decoder = decoder();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in &input {
        buf.put_u8(*byte);
        got.extend(decoder.decode(&mut buf).expect("valid").map(|request| args(&request)));
    }
    assert_eq!(got, expected);
    assert_eq!(decode_all(b"*1\r\n$1000000000000000000\r\n"), Err(ProtocolError::InvalidBulkLength));
    assert_eq!(decode_all(b"*1\r\n$3x\r\n"), Err(ProtocolError::InvalidBulkLength));
}

#[test]
fn whole_requests_read_as_requests_arriving_byte_by_byte() {
    // A request in the buffer whole takes the one-pass path (`whole_request`); arriving byte by
    // byte it takes the general one. Both must give the same requests and the same errors, at
    // the limits too.
    let limits = Limits { max_request_bytes: 30, max_array_len: 3 };
    let byte_by_byte = |input: &[u8]| -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let (mut decoder, mut buf, mut out) = (RequestDecoder::new(limits), BytesMut::new(), Vec::new());
        for byte in input {
            buf.put_u8(*byte);
            out.extend(decoder.decode(&mut buf)?.map(|request| args(&request)));
        }
        Ok(out)
    };
    let whole = |input: &[u8]| -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let (mut decoder, mut buf, mut out) = (RequestDecoder::new(limits), BytesMut::from(input), Vec::new());
        while let Some(request) = decoder.decode(&mut buf)? {
            out.push(args(&request));
        }
        Ok(out)
    };
    let inputs: [&[u8]; 8] = [
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n",
        // 30 bytes exactly, then one more.
        b"*2\r\n$3\r\nSET\r\n$10\r\n0123456789\r\n",
        b"*2\r\n$3\r\nSET\r\n$11\r\n0123456789a\r\n",
        // The most arguments allowed, then one more.
        b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
        b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n",
        b"*1\r\n$3\r\nGETX\r\n",
        b"*1\r\n:3\r\nGET\r\n",
        b"*0\r\n*1\r\n$0\r\n\r\n",
    ];
    for input in inputs {
        assert_eq!(whole(input), byte_by_byte(input), "{:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(whole(inputs[1]).expect("valid"), vec![v(&["SET", "0123456789"])]);
    assert_eq!(whole(inputs[2]), Err(ProtocolError::RequestTooBig(30)));
    assert_eq!(whole(inputs[4]), Err(ProtocolError::InvalidMultibulkLength));
}

#[test]
fn a_client_that_must_log_in_sends_at_most_ten_arguments_of_16_kib() {
    let decode = |input: &[u8], unauthenticated: bool| {
        let mut decoder = decoder();
        decoder.set_unauthenticated(unauthenticated);
        decoder.decode(&mut BytesMut::from(input)).map(|r| r.map(|r| args(&r)))
    };
    let big = format!("*2\r\n$3\r\nGET\r\n$16385\r\n{}\r\n", "x".repeat(16385));
    let fits = format!("*2\r\n$3\r\nGET\r\n$16384\r\n{}\r\n", "x".repeat(16384));
    let eleven = format!("*11\r\n{}", "$1\r\nx\r\n".repeat(11));
    assert_eq!(decode(big.as_bytes(), true), Err(ProtocolError::UnauthenticatedBulk));
    assert_eq!(decode(eleven.as_bytes(), true), Err(ProtocolError::UnauthenticatedCount));
    // Refused on the header alone, before the rest arrives.
    assert_eq!(decode(b"*11\r\n", true), Err(ProtocolError::UnauthenticatedCount));
    assert_eq!(decode(b"*1\r\n$16385\r\n", true), Err(ProtocolError::UnauthenticatedBulk));
    assert!(matches!(decode(fits.as_bytes(), true), Ok(Some(_))));
    assert!(matches!(decode(big.as_bytes(), false), Ok(Some(_))));
    assert!(matches!(decode(eleven.as_bytes(), false), Ok(Some(_))));
    // Counts of nothing are skipped either way; inline lines are not limited (as in Redis).
    assert_eq!(decode(b"*-1\r\n", true), Ok(None));
    assert!(matches!(decode(format!("SET k {}\r\n", "x".repeat(20_000)).as_bytes(), true), Ok(Some(_))));
}
