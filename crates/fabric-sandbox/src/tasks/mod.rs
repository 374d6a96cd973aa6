//! Child tasks an agent submits (`fabric:agent/tasks`): one per-attempt state that both
//! ABIs call into — components through `wit/fabric-agent.wit` ([`p2`]), core modules
//! through the `fabric.submit` import ([`p1`]) — holding the attempt's grant, its bounds
//! on calls and bytes, and the children it accepted. Nothing is created here: the
//! children go back with the attempt, for the caller to commit with its completion (or
//! drop).

mod p1;
mod p2;

use std::fmt;
use std::sync::Arc;

use fabric_types::wire::TaskSpec;
use fabric_types::workflow::{MAX_CHILDREN_PER_ATTEMPT, MAX_TASK_DEPTH};
use wasmtime::AsContextMut;

pub(crate) use p1::add_to_linker as add_to_p1_linker;
pub(crate) use p2::add_to_linker as add_to_p2_linker;

/// Fuel every `submit` call costs the attempt, taken or refused, as a telemetry call does.
pub const SUBMIT_CALL_FUEL: u64 = 1_000;

/// The largest spec one `submit` call may pass, in bytes: 256 KiB. A longer one is
/// refused from its length alone ([`SubmitRefusal::SpecTooLarge`]), nothing read.
pub const MAX_SPEC_BYTES: usize = 256 << 10;

/// The most spec bytes one attempt may pass to `submit`, every call's together (taken or
/// refused once read): 4 MiB. This bounds what the host parses and buffers per attempt;
/// a call that would pass it is refused ([`SubmitRefusal::TooManyBytes`]), nothing read.
pub const MAX_SPEC_BYTES_PER_ATTEMPT: usize = 4 << 20;

/// Takes [`SUBMIT_CALL_FUEL`] from the attempt's fuel (see [`crate::hostcalls::charge`]).
fn charge(store: impl AsContextMut) -> wasmtime::Result<()> {
    crate::hostcalls::charge(store, SUBMIT_CALL_FUEL)
}

/// What the host provides to an attempt that may submit child tasks: it checks each spec
/// as it checks a task a client submits, and names each child. The sandbox knows neither
/// the store nor its ids; the scheduler implements this with them.
pub trait ChildTasks: Send + Sync {
    /// Whether `spec` may become a child task of the running one: `Ok`, or the reason it
    /// may not (shown to a component as is). `earlier` are the children this attempt
    /// submitted before, in order: a child's `after` may name their ids.
    fn check(&self, spec: &TaskSpec, earlier: &[Child]) -> Result<(), String>;

    /// A fresh id for a child about to be accepted. The guest gets it at once; the task
    /// exists only once the attempt's completion is committed.
    fn mint_id(&self) -> String;
}

/// The grant of child tasks to one attempt: the running task's depth and the host's
/// [`ChildTasks`]. Without one (the default), every `submit` is refused.
#[derive(Clone)]
pub struct TaskGrant {
    /// The running task's depth: 0 for a task a client submitted, its parent's + 1 for a
    /// child. A task at [`MAX_TASK_DEPTH`] may not submit children.
    pub depth: u32,
    pub host: Arc<dyn ChildTasks>,
}

impl fmt::Debug for TaskGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGrant")
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// A child task an attempt submitted and the host accepted: the id the guest was given
/// and the spec as the guest wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub id: String,
    pub spec: TaskSpec,
}

/// Why a `submit` call was refused. Core modules see [`SubmitRefusal::code`] (negative,
/// since a taken call returns the id's length); components see the message
/// ([`fmt::Display`]), which for a malformed or refused spec says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitRefusal {
    /// The attempt was granted no child tasks.
    NotGranted,
    /// The running task is at [`MAX_TASK_DEPTH`]: its children would be deeper.
    TooDeep,
    /// The attempt already made [`MAX_CHILDREN_PER_ATTEMPT`] `submit` calls.
    TooManyChildren,
    /// The spec or the id buffer does not lie inside the guest's memory (core modules).
    BadPointer,
    /// The spec is longer than [`MAX_SPEC_BYTES`].
    SpecTooLarge,
    /// The spec would take the attempt past [`MAX_SPEC_BYTES_PER_ATTEMPT`].
    TooManyBytes,
    /// The spec is not UTF-8.
    NotUtf8,
    /// The spec is not a `TaskSpec` in JSON (unknown fields included); the parser's
    /// reason.
    Malformed(String),
    /// The host's check refused the spec; its reason.
    Refused(String),
    /// The id does not fit the buffer the guest passed (core modules); the child was not
    /// submitted.
    IdBufferTooSmall,
}

impl SubmitRefusal {
    /// The codes, in order: `-1` [`SubmitRefusal::NotGranted`] to `-10`
    /// [`SubmitRefusal::IdBufferTooSmall`].
    pub fn code(&self) -> i32 {
        match self {
            SubmitRefusal::NotGranted => -1,
            SubmitRefusal::TooDeep => -2,
            SubmitRefusal::TooManyChildren => -3,
            SubmitRefusal::BadPointer => -4,
            SubmitRefusal::SpecTooLarge => -5,
            SubmitRefusal::TooManyBytes => -6,
            SubmitRefusal::NotUtf8 => -7,
            SubmitRefusal::Malformed(_) => -8,
            SubmitRefusal::Refused(_) => -9,
            SubmitRefusal::IdBufferTooSmall => -10,
        }
    }
}

impl fmt::Display for SubmitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitRefusal::NotGranted => {
                f.write_str("not granted: this task may not submit child tasks")
            }
            SubmitRefusal::TooDeep => write!(
                f,
                "too deep: this task is at depth {MAX_TASK_DEPTH}, the deepest a task may be"
            ),
            SubmitRefusal::TooManyChildren => write!(
                f,
                "limit reached: this attempt made the most submit calls it may \
                 ({MAX_CHILDREN_PER_ATTEMPT})"
            ),
            SubmitRefusal::BadPointer => {
                f.write_str("bad pointer: the bytes lie outside the guest memory")
            }
            SubmitRefusal::SpecTooLarge => {
                write!(f, "spec too large: at most {MAX_SPEC_BYTES} bytes")
            }
            SubmitRefusal::TooManyBytes => write!(
                f,
                "limit reached: this attempt's specs may not pass \
                 {MAX_SPEC_BYTES_PER_ATTEMPT} bytes together"
            ),
            SubmitRefusal::NotUtf8 => f.write_str("spec not UTF-8"),
            SubmitRefusal::Malformed(why) => write!(f, "malformed spec: {why}"),
            SubmitRefusal::Refused(why) => write!(f, "refused: {why}"),
            SubmitRefusal::IdBufferTooSmall => {
                f.write_str("id buffer too small: the child was not submitted")
            }
        }
    }
}

/// `text` as a `TaskSpec`, or why it is not one.
pub(crate) fn parse(text: &str) -> Result<TaskSpec, SubmitRefusal> {
    serde_json::from_str(text).map_err(|e| SubmitRefusal::Malformed(e.to_string()))
}

/// One attempt's child tasks: its grant, the calls made, the spec bytes read and the
/// children accepted. The ABI adapters call [`Tasks::admit`] first, then check the
/// guest's pointers, then [`Tasks::fits`], then read and [`parse`] the spec, then
/// [`Tasks::spend`] and [`Tasks::accept`].
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    grant: Option<TaskGrant>,
    calls: usize,
    bytes: usize,
    children: Vec<Child>,
}

impl Tasks {
    pub fn new(grant: Option<TaskGrant>) -> Self {
        Self {
            grant,
            ..Self::default()
        }
    }

    /// Counts one call, unless the attempt may submit nothing (no grant, or too deep) or
    /// already made as many calls as it may. Cheap: the adapters call it before reading
    /// anything of the guest's.
    pub fn admit(&mut self) -> Result<(), SubmitRefusal> {
        let grant = self.grant.as_ref().ok_or(SubmitRefusal::NotGranted)?;
        if grant.depth >= MAX_TASK_DEPTH {
            return Err(SubmitRefusal::TooDeep);
        }
        if self.calls >= MAX_CHILDREN_PER_ATTEMPT {
            return Err(SubmitRefusal::TooManyChildren);
        }
        self.calls += 1;
        Ok(())
    }

    /// Whether a spec of `len` bytes may be read: at most [`MAX_SPEC_BYTES`], and within
    /// what is left of [`MAX_SPEC_BYTES_PER_ATTEMPT`].
    pub fn fits(&self, len: usize) -> Result<(), SubmitRefusal> {
        if len > MAX_SPEC_BYTES {
            return Err(SubmitRefusal::SpecTooLarge);
        }
        if self.bytes + len > MAX_SPEC_BYTES_PER_ATTEMPT {
            return Err(SubmitRefusal::TooManyBytes);
        }
        Ok(())
    }

    /// Counts `len` bytes read against [`MAX_SPEC_BYTES_PER_ATTEMPT`], whatever the spec.
    pub fn spend(&mut self, len: usize) {
        self.bytes += len;
    }

    /// Accepts `spec` as a child if the host's check allows it and its id fits in
    /// `id_cap` bytes: returns the id.
    pub fn accept(&mut self, spec: TaskSpec, id_cap: usize) -> Result<String, SubmitRefusal> {
        let host = &self
            .grant
            .as_ref()
            .expect("admitted calls have a grant")
            .host;
        host.check(&spec, &self.children)
            .map_err(SubmitRefusal::Refused)?;
        let id = host.mint_id();
        if id.len() > id_cap {
            return Err(SubmitRefusal::IdBufferTooSmall);
        }
        self.children.push(Child {
            id: id.clone(),
            spec,
        });
        Ok(id)
    }

    /// The children accepted, in order, leaving none.
    pub fn take_children(&mut self) -> Vec<Child> {
        std::mem::take(&mut self.children)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Ids `c1`, `c2`, ...; refuses the module `forbidden` and an `args` naming an id no
    /// earlier child has.
    #[derive(Default)]
    struct Host(AtomicU32);

    impl ChildTasks for Host {
        fn check(&self, spec: &TaskSpec, earlier: &[Child]) -> Result<(), String> {
            if spec.module == "forbidden" {
                return Err("module forbidden is not allowed".into());
            }
            for arg in &spec.args {
                if !earlier.iter().any(|child| child.id == *arg) {
                    return Err(format!("no earlier child {arg}"));
                }
            }
            Ok(())
        }

        fn mint_id(&self) -> String {
            format!("c{}", self.0.fetch_add(1, Ordering::Relaxed) + 1)
        }
    }

    fn granted(depth: u32) -> Tasks {
        Tasks::new(Some(TaskGrant {
            depth,
            host: Arc::new(Host::default()),
        }))
    }

    fn spec(module: &str) -> TaskSpec {
        parse(&format!(r#"{{"module":"{module}"}}"#)).unwrap()
    }

    #[test]
    fn without_a_grant_or_past_the_depth_every_call_is_refused_and_not_counted() {
        let mut tasks = Tasks::new(None);
        assert_eq!(tasks.admit(), Err(SubmitRefusal::NotGranted));
        let mut deepest = granted(MAX_TASK_DEPTH);
        assert_eq!(deepest.admit(), Err(SubmitRefusal::TooDeep));
        let mut below = granted(MAX_TASK_DEPTH - 1);
        assert_eq!(below.admit(), Ok(()));
        assert_eq!((tasks.calls, deepest.calls, below.calls), (0, 0, 1));
    }

    #[test]
    fn calls_past_the_limit_are_refused_and_not_counted_further() {
        let mut tasks = granted(0);
        for _ in 0..MAX_CHILDREN_PER_ATTEMPT {
            assert_eq!(tasks.admit(), Ok(()));
        }
        for _ in 0..5 {
            assert_eq!(tasks.admit(), Err(SubmitRefusal::TooManyChildren));
        }
        assert_eq!(tasks.calls, MAX_CHILDREN_PER_ATTEMPT);
    }

    #[test]
    fn spec_bytes_are_bounded_per_call_and_per_attempt() {
        let mut tasks = granted(0);
        assert_eq!(tasks.fits(MAX_SPEC_BYTES), Ok(()));
        assert_eq!(
            tasks.fits(MAX_SPEC_BYTES + 1),
            Err(SubmitRefusal::SpecTooLarge)
        );
        for _ in 0..MAX_SPEC_BYTES_PER_ATTEMPT / MAX_SPEC_BYTES {
            assert_eq!(tasks.fits(MAX_SPEC_BYTES), Ok(()));
            tasks.spend(MAX_SPEC_BYTES);
        }
        assert_eq!(tasks.fits(0), Ok(()));
        assert_eq!(tasks.fits(1), Err(SubmitRefusal::TooManyBytes));
    }

    #[test]
    fn specs_are_parsed_strictly() {
        assert_eq!(spec("wordcount").module, "wordcount");
        let unknown = parse(r#"{"module":"echo","inptu":"x"}"#).unwrap_err();
        assert!(
            matches!(&unknown, SubmitRefusal::Malformed(why) if why.contains("inptu")),
            "{unknown}"
        );
        assert_eq!(unknown.code(), -8);
        assert!(matches!(parse("{"), Err(SubmitRefusal::Malformed(_))));
        assert!(matches!(parse("[]"), Err(SubmitRefusal::Malformed(_))));
        assert!(
            matches!(parse(r#"{"input":"x"}"#), Err(SubmitRefusal::Malformed(why)) if why.contains("module"))
        );
        // Deep nesting is refused at its first bracket (no field takes nested arrays),
        // never recursed into.
        let deep = format!(
            r#"{{"module":"echo","labels":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(
            matches!(parse(&deep), Err(SubmitRefusal::Malformed(why)) if why.starts_with("invalid type: sequence, expected a map")),
            "{:?}",
            parse(&deep)
        );
    }

    #[test]
    fn accepted_children_are_kept_in_order_with_the_ids_the_host_minted() {
        let mut tasks = granted(3);
        assert_eq!(tasks.accept(spec("a"), 64), Ok("c1".into()));
        assert_eq!(
            tasks.accept(spec("forbidden"), 64),
            Err(SubmitRefusal::Refused(
                "module forbidden is not allowed".into()
            ))
        );
        let mut fan_in = spec("join");
        fan_in.args = vec!["c1".into()];
        assert_eq!(tasks.accept(fan_in.clone(), 64), Ok("c2".into()));
        fan_in.args = vec!["c9".into()];
        assert_eq!(
            tasks.accept(fan_in, 64),
            Err(SubmitRefusal::Refused("no earlier child c9".into()))
        );
        // An id that does not fit is not handed out, and the child is not kept.
        assert_eq!(
            tasks.accept(spec("b"), 1),
            Err(SubmitRefusal::IdBufferTooSmall)
        );
        let children = tasks.take_children();
        let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert_eq!(children[1].spec.args, ["c1"]);
        assert!(tasks.take_children().is_empty());
    }

    #[test]
    fn codes_are_distinct_negative_numbers_and_messages_say_why() {
        let all = [
            SubmitRefusal::NotGranted,
            SubmitRefusal::TooDeep,
            SubmitRefusal::TooManyChildren,
            SubmitRefusal::BadPointer,
            SubmitRefusal::SpecTooLarge,
            SubmitRefusal::TooManyBytes,
            SubmitRefusal::NotUtf8,
            SubmitRefusal::Malformed("m".into()),
            SubmitRefusal::Refused("r".into()),
            SubmitRefusal::IdBufferTooSmall,
        ];
        let codes: Vec<i32> = all.iter().map(SubmitRefusal::code).collect();
        assert_eq!(codes, (1..=10).map(|c| -c).collect::<Vec<_>>());
        assert_eq!(
            SubmitRefusal::Malformed("m".into()).to_string(),
            "malformed spec: m"
        );
        assert_eq!(SubmitRefusal::Refused("r".into()).to_string(), "refused: r");
        assert!(SubmitRefusal::TooManyChildren.to_string().contains("1000"));
    }
}
