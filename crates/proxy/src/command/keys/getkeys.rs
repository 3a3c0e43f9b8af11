//! `COMMAND GETKEYS` as Redis 7 answers it, which differs from routing in a few ways: no arity
//! check before the search, channels are not keys, and keys are listed in key-spec order.

use super::*;

/// Why `COMMAND GETKEYS` lists no keys; `Display` is Redis 7's wording (without `ERR `).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GetKeysError {
    /// No such command, or no such subcommand of a command that has subcommands.
    #[error("Invalid command specified")]
    InvalidCommand,
    /// The command never takes keys (sharded channels do not count).
    #[error("The command has no key arguments")]
    NoKeyArguments,
    /// The arguments do not fit the command's arity.
    #[error("Invalid number of arguments specified for command")]
    InvalidArgumentCount,
    /// The arguments name no key: a bad numkeys, a missing keyword, an empty range.
    #[error("Invalid arguments specified for command")]
    InvalidArguments,
}

/// The keys `COMMAND GETKEYS` lists for a request for `command`, as Redis 7's
/// `getKeysSubcommandImpl` finds them: in key-spec order with repeats (routing wants request order
/// without repeats, see [`find_key_positions`]), no sharded channels, and, where a spec does not fit
/// the request, the command's own getkeys function's answer instead.
pub(in crate::command) fn command_getkeys(
    command: &crate::command::CommandSpec,
    args: &(impl Args + ?Sized),
) -> Result<Vec<usize>, GetKeysError> {
    if command.key_specs.iter().all(|s| s.flags.contains(KeySpecFlags::NOT_KEY)) {
        return Err(GetKeysError::NoKeyArguments);
    }
    if !command.arity_ok(args.len()) {
        return Err(GetKeysError::InvalidArgumentCount);
    }
    let keys = strict_spec_positions(command, args).unwrap_or_else(|| getkeys_function(&command.name, args));
    match keys.is_empty() && !command.flags.contains(crate::command::CommandFlags::NO_MANDATORY_KEYS) {
        true => Err(GetKeysError::InvalidArguments),
        false => Ok(keys),
    }
}

/// The keys Redis' `getKeysUsingKeySpecs` finds without `GET_KEYSPEC_RETURN_PARTIAL`: spec by spec,
/// repeats kept; `None` when any spec is unknown, incomplete or does not fit the request (a numkeys
/// that is no integer or counts past the end), which sends Redis to the command's getkeys function.
/// A keyword that is absent only makes its spec find nothing.
fn strict_spec_positions(command: &crate::command::CommandSpec, args: &(impl Args + ?Sized)) -> Option<Vec<usize>> {
    let argc = args.len();
    let mut out = Vec::new();
    for spec in command.key_specs.iter().filter(|s| !s.flags.contains(KeySpecFlags::NOT_KEY)) {
        let start = match &spec.begin_search {
            BeginSearch::Index(i) => *i,
            BeginSearch::Keyword { keyword, startfrom } => match keyword_start(args, keyword, *startfrom) {
                Some(i) => i,
                None => continue,
            },
            BeginSearch::Unknown => return None,
        };
        let (first, last, step) = match spec.find_keys {
            FindKeys::Range { lastkey, step, limit } => (start as i64, range_last(start, argc, lastkey, limit), step),
            FindKeys::Keynum { keynumidx, firstkey, step } => {
                let at = start + keynumidx;
                let numkeys = (at < argc).then(|| super::parse_integer(args.get(at))).flatten().filter(|&n| n >= 0)?;
                let first = (start + firstkey) as i64;
                (first, first.saturating_add(numkeys) - 1, step)
            }
            FindKeys::Unknown => return None,
        };
        if last >= argc as i64 || last < first || first >= argc as i64 {
            return None;
        }
        out.extend((first as usize..=last as usize).step_by(step));
        if spec.flags.contains(KeySpecFlags::INCOMPLETE) {
            return None;
        }
    }
    Some(out)
}

/// What the getkeys function of a built-in command finds (`sortGetKeys`, `migrateGetKeys`, and the
/// numkeys commands' `genericGetKeys`, which reads the count with C's `atoi`); nothing for commands
/// without one, or whose function agrees with their specs wherever those fit.
pub(in crate::command) fn getkeys_function(command: &str, args: &(impl Args + ?Sized)) -> Vec<usize> {
    let mut out = Vec::new();
    // (destination index, numkeys index) of genericGetKeys; keys follow the count, one apart.
    let numkeys_form = match command {
        "zunionstore" | "zinterstore" | "zdiffstore" => Some((Some(1), 2)),
        "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => Some((None, 1)),
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" | "blmpop" | "bzmpop" => Some((None, 2)),
        "sort" => {
            sort_positions(args, &mut |position, _| out.push(position));
            None
        }
        "sort_ro" if args.len() > 1 => {
            out.push(1);
            None
        }
        "migrate" => {
            migrate_positions(args, &mut |position, _| out.push(position));
            None
        }
        _ => None,
    };
    if let Some((destination, count_at)) = numkeys_form.filter(|&(_, count_at)| count_at < args.len()) {
        let first = count_at + 1;
        let count = atoi(args.get(count_at));
        if count >= 1 && count <= (args.len() - first) as i64 {
            // genericGetKeys lists the destination after the sources.
            out.extend(first..first + count as usize);
            out.extend(destination);
        }
    }
    out
}

/// C's `atoi` as glibc behaves for in-range values: leading blanks, an optional sign, then digits up
/// to the first non-digit; 0 when there are none.
fn atoi(arg: &[u8]) -> i64 {
    let text = arg.trim_ascii_start();
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    let value = digits
        .iter()
        .take_while(|d| d.is_ascii_digit())
        .fold(0i64, |n, &d| n.saturating_mul(10).saturating_add(i64::from(d - b'0')));
    if negative { -value } else { value }
}
