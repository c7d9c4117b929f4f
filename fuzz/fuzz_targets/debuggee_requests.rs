//! hv-stub's request path on arbitrary requests: the input is read as a
//! sequence of frames (type, session, seq, payload) that are given valid
//! CRCs, mixed with raw garbage, and fed to a simulated debuggee. Nothing
//! may panic, and no sequence of requests may leave the guest in a state
//! where VM entry fails.
#![no_main]

use hv_stub::simulated::SimTarget;
use hv_stub::CpuCaps;
use libfuzzer_sys::fuzz_target;
use pulse_proto::encode_frame;
use pulse_proto::message::kind;

fuzz_target!(|data: &[u8]| {
    let Some((&profile, mut rest)) = data.split_first() else {
        return;
    };
    let cpu = CpuCaps::PROFILES[usize::from(profile) % CpuCaps::PROFILES.len()];
    let mut target = SimTarget::new(cpu, 0);
    let mut sink = |_: &[u8]| {};
    // Sessions are random and a session's SEQs count from its Hello's, so
    // frames may name "the current session" and "the Hello's SEQ + n" to
    // reach the request path.
    let mut hello_seq = 0u16;
    while rest.len() >= 5 {
        let (head, tail) = rest.split_at(5);
        let len = usize::from(head[4] % 16).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        if head[0] & 0x0F == 0x0F {
            // Raw bytes, no framing.
            target.receive(payload, &mut sink);
            continue;
        }
        if head[0] & 0x0F == 0x0E {
            target.stub_mut().line_idle();
            continue;
        }
        let frame_kind = head[0] % 4;
        let session = match head[1] % 4 {
            0 => target.stub().session().unwrap_or(0),
            _ => head[1] / 4,
        };
        let mut seq = u16::from_le_bytes([head[2], head[3]]);
        if head[0] & 0x40 != 0 {
            seq = hello_seq.wrapping_add(u16::from(head[2]));
        }
        if frame_kind == kind::HELLO {
            hello_seq = seq;
        }
        let frame = encode_frame(frame_kind, session, seq, payload);
        target.receive(frame.as_bytes(), &mut sink);
    }
    assert_eq!(target.last_entry_failure(), None);
});
