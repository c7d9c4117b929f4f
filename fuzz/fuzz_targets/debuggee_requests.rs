//! hv-stub's request path on arbitrary requests: the input is read as a
//! sequence of frames (type, session, seq, payload) that are given valid
//! CRCs, mixed with raw garbage, and fed to a simulated debuggee. Nothing
//! may panic, and no sequence of requests may leave the guest in a state
//! where VM entry fails.
#![no_main]

use hv_stub::sim::SimTarget;
use hv_stub::CpuCaps;
use libfuzzer_sys::fuzz_target;
use pulse_proto::encode_frame;

fuzz_target!(|data: &[u8]| {
    let Some((&profile, mut rest)) = data.split_first() else {
        return;
    };
    let cpu = CpuCaps::PROFILES[usize::from(profile) % CpuCaps::PROFILES.len()];
    // Seed 0: the first handshake opens session 1, which `% 4` below reaches.
    let mut target = SimTarget::new(cpu, 0);
    let mut sink = |_: &[u8]| {};
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
        let seq = u16::from_le_bytes([head[2], head[3]]);
        let frame = encode_frame(head[0] % 4, head[1] % 4, seq, payload);
        target.receive(frame.as_bytes(), &mut sink);
    }
    assert_eq!(target.last_entry_failure(), None);
});
