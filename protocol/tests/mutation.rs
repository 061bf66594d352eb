//! Randomized mutation test of every decoder that takes untrusted bytes.
//!
//! Valid frames, record batches and control archives are truncated, bit-flipped, given huge
//! lengths, padded with garbage or replaced by noise, then fed to the decoders, which must
//! never panic, must say `Incomplete` exactly for strict prefixes, must reject corruption of
//! every checksummed byte, and must not allocate at all (frames, batches) or more than in
//! proportion to the input (control archives). A counting global allocator checks the last
//! part, per thread, so the other tests of this binary cannot disturb the count.
//!
//! Seeded: set `DEFIBUS_MUTATION_SEED` to replay a failure; every assertion names the seed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use protocol::codes::Command;
use protocol::control::{self, ErrorReply, FlushMode, GslResolveReply, TopicConfig, TopicRoute};
use protocol::frame::{
    ExtField, FrameError, FrameFault, FrameHeader, FrameLimits, FrameMeta, Framer, HEADER_LEN,
    HeaderError, encode_ext, encode_frame, offset,
};
use protocol::record::{
    BATCH_HEADER_LEN, BATCH_HEADER_LEN_V3, BatchBuilder, BatchError, BatchView, CRC_START,
    MessageType, PRODUCER_FIELDS, Property, Record, STAMP, stamp,
};

struct CountingAlloc;

thread_local! {
    /// Bytes allocated by this thread; const-initialized, so reading it never allocates.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout, via `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the bytes it allocated on this thread.
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATED.with(Cell::get);
    let result = f();
    (result, ALLOCATED.with(Cell::get) - before)
}

const FRAME_LEN_MAX: usize = 1 << 20;
const BATCH_LEN_MAX: usize = 1 << 20;
const ITERATIONS: usize = 3000;

fn seed() -> u64 {
    std::env::var("DEFIBUS_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00DE_F1B5)
}

fn random_bytes(rng: &mut StdRng, len_max: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.random_range(0..=len_max)];
    rng.fill(&mut bytes[..]);
    bytes
}

fn random_batch(rng: &mut StdRng) -> Vec<u8> {
    let area = "A10".parse().unwrap();
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    for i in 0..rng.random_range(1..5) {
        let key = random_bytes(rng, 8);
        let value = random_bytes(rng, 64);
        let correlation = random_bytes(rng, 8);
        let properties = [
            Property::ReplyTo("10.0.0.7@42#A10"),
            Property::CorrelationId(&correlation),
            Property::DeadlineMs(rng.random()),
            Property::Area(area),
            Property::Tag("gray"),
            Property::User {
                key: "k",
                value: &value[..value.len().min(4)],
            },
            Property::Unknown {
                tag: 0x42,
                value: b"x",
            },
        ];
        let count = rng.random_range(0..=properties.len());
        builder
            .push(&Record {
                timestamp_ms: rng.random(),
                message_type: [MessageType::Event, MessageType::Request, MessageType::Reply][i % 3],
                key: &key,
                properties: &properties[..count],
                value: &value,
            })
            .unwrap();
    }
    let mut batch = builder.finish().unwrap();
    stamp(&mut batch, rng.random_range(0..1 << 40), rng.random()).unwrap();
    batch
}

fn random_control(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..3) {
        0 => control::encode(&TopicConfig::new(&"A10-20190001".parse().unwrap())).unwrap(),
        1 => control::encode(&ErrorReply {
            status: rng.random(),
            message: "x".repeat(rng.random_range(0..40)),
        })
        .unwrap(),
        _ => control::encode(&TopicRoute {
            topic: "B20-7".into(),
            queues: vec![Default::default(); rng.random_range(0..4)],
        })
        .unwrap(),
    }
}

/// A valid frame and whether its body is exempt from the frame checksum.
fn random_frame(rng: &mut StdRng) -> (Vec<u8>, bool) {
    let (meta, body) = match rng.random_range(0..3) {
        0 => (
            FrameMeta::request(Command::Produce, rng.random()).without_body_crc(),
            random_batch(rng),
        ),
        1 => (
            FrameMeta::request(Command::CreateTopic, rng.random()),
            random_control(rng),
        ),
        _ => (
            FrameMeta::oneway(Command::Credit, rng.random()),
            random_bytes(rng, 200),
        ),
    };
    let value = random_bytes(rng, 20);
    let mut ext = Vec::new();
    if rng.random_bool(0.5) {
        let tag = rng.random_range(1..=u16::MAX);
        encode_ext(&[ExtField { tag, value: &value }], &mut ext).unwrap();
    }
    let mut frame = Vec::new();
    encode_frame(&meta, &ext, &body, &mut frame).unwrap();
    (
        frame,
        meta.flags & protocol::frame::flag::BODY_CRC_ABSENT != 0,
    )
}

/// Feeds `bytes` to check, parse and split_frame; asserts they agree, do not allocate (apart
/// from split_frame's bounded reserve) and returns parse's verdict.
fn frame_verdict(framer: &Framer, bytes: &[u8], seed: u64) -> Result<usize, FrameError> {
    let ((checked, parsed), allocated) =
        allocated_by(|| (framer.check(bytes), framer.parse(bytes)));
    assert_eq!(allocated, 0, "seed {seed}: framer allocated");
    match (&checked, &parsed) {
        (Ok(info), Ok(frame)) => assert_eq!(info.frame_len, frame.frame_len()),
        (Ok(_), Err(FrameError::Invalid { .. })) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "seed {seed}"),
        _ => panic!("seed {seed}: check {checked:?} but parse {parsed:?}"),
    }
    if let Err(FrameError::Incomplete { needed }) = parsed {
        assert!(
            needed > bytes.len() && needed <= FRAME_LEN_MAX,
            "seed {seed}"
        );
    }
    let mut buf = BytesMut::from(bytes);
    let split = framer.split_frame(&mut buf);
    assert!(
        buf.capacity() <= FRAME_LEN_MAX.max(bytes.len()),
        "seed {seed}"
    );
    match (&split, &parsed) {
        (Ok(Some(f)), Ok(frame)) => assert_eq!(f.as_frame(), *frame),
        (Ok(None), Err(FrameError::Incomplete { .. })) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "seed {seed}"),
        _ => panic!("seed {seed}: split {split:?} but parse {parsed:?}"),
    }
    parsed.map(|frame| frame.frame_len())
}

fn batch_verdict(bytes: &[u8], seed: u64) -> Result<usize, BatchError> {
    let (result, allocated) = allocated_by(|| {
        let batch = BatchView::parse(bytes, BATCH_LEN_MAX)?;
        // Walking a valid batch must not allocate either.
        for record in batch.records() {
            for property in record.properties() {
                property.map_err(|_| BatchError::Empty)?;
            }
        }
        Ok(batch.len())
    });
    assert_eq!(allocated, 0, "seed {seed}: batch parsing allocated");
    result
}

/// Recomputes a batch's checksum the way a writer would, walking record heads as far as the
/// (possibly forged) lengths allow: what a forger who knows the format can do.
fn reseal(batch: &mut [u8]) {
    let mut crc = crc32c::crc32c(&batch[CRC_START..BATCH_HEADER_LEN]);
    let mut at = BATCH_HEADER_LEN_V3;
    while at + 8 <= batch.len() {
        crc = crc32c::crc32c_append(crc, &batch[at..at + 8]);
        let len = u32::from_le_bytes(batch[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at = at.saturating_add(len);
    }
    crc = crc32c::crc32c_append(crc, &batch[PRODUCER_FIELDS]);
    crc = crc32c::crc32c_append(crc, &batch[STAMP]);
    batch[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn flip_bits(rng: &mut StdRng, bytes: &mut [u8], range: std::ops::Range<usize>) -> Vec<usize> {
    let mut flipped: Vec<usize> = (0..rng.random_range(1..=3))
        .map(|_| rng.random_range(range.start * 8..range.end * 8))
        .collect();
    flipped.sort_unstable();
    flipped.dedup();
    for &bit in &flipped {
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
    flipped
}

#[test]
fn frames_survive_mutation() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let framer = Framer::new(FrameLimits {
        frame_len_max: FRAME_LEN_MAX,
        ext_len_max: 4096,
    });
    for _ in 0..ITERATIONS {
        let (frame, body_crc_absent) = random_frame(&mut rng);
        let len = frame.len();
        assert_eq!(frame_verdict(&framer, &frame, seed), Ok(len));
        let header = FrameHeader::decode(&frame).unwrap();
        let body_start = HEADER_LEN + header.ext_len as usize;

        // Every strict prefix is incomplete, never invalid.
        let cut = rng.random_range(0..len);
        let needed = if cut < HEADER_LEN { HEADER_LEN } else { len };
        assert_eq!(
            frame_verdict(&framer, &frame[..cut], seed),
            Err(FrameError::Incomplete { needed }),
            "seed {seed}: cut at {cut}"
        );

        // Flipped bits are caught, except in a body that carries its own checksums, which
        // the record batch then catches.
        let mut flipped = frame.clone();
        let bits = flip_bits(&mut rng, &mut flipped, 0..len);
        let verdict = frame_verdict(&framer, &flipped, seed);
        if body_crc_absent && bits[0] >= body_start * 8 {
            assert_eq!(verdict, Ok(len), "seed {seed}: bits {bits:?}");
            assert!(
                batch_verdict(&flipped[body_start..], seed).is_err(),
                "seed {seed}: bits {bits:?}"
            );
        } else {
            assert!(
                matches!(verdict, Err(FrameError::Invalid { .. })),
                "seed {seed}: bits {bits:?} gave {verdict:?}"
            );
        }

        // Huge declared lengths are refused from the header alone, resealed or not.
        let mut huge = header;
        huge.body_len = rng.random_range(FRAME_LEN_MAX as u32..=u32::MAX);
        let unsealed = huge.encode();
        assert!(matches!(
            frame_verdict(&framer, &unsealed, seed),
            Err(FrameError::Invalid {
                offset: offset::HEADER_CRC,
                reason: FrameFault::Header(HeaderError::HeaderChecksum { .. })
            })
        ));
        huge.header_crc32c = huge.compute_header_crc();
        assert!(
            matches!(
                frame_verdict(&framer, &huge.encode(), seed),
                Err(FrameError::Invalid {
                    offset: offset::BODY_LEN,
                    reason: FrameFault::Header(HeaderError::FrameTooLarge { .. })
                })
            ),
            "seed {seed}"
        );

        // Trailing bytes belong to the next frame and are left alone.
        let mut longer = frame.clone();
        longer.extend_from_slice(&random_bytes(&mut rng, 64));
        assert_eq!(frame_verdict(&framer, &longer, seed), Ok(len));

        // Noise, bare or behind a valid magic, is refused or awaited within limits.
        let mut noise = random_bytes(&mut rng, 128);
        if rng.random_bool(0.5) && noise.len() >= 5 {
            noise[..5].copy_from_slice(b"DFB1\x01");
        }
        let _ = frame_verdict(&framer, &noise, seed);

        // A correctly sealed header with random fields is judged without panicking.
        let mut random_header = FrameHeader::decode(&random_bytes_exact(&mut rng)).unwrap();
        random_header.magic = protocol::frame::MAGIC;
        random_header.version = 1;
        random_header.header_crc32c = random_header.compute_header_crc();
        let _ = frame_verdict(&framer, &random_header.encode(), seed);
    }
}

fn random_bytes_exact(rng: &mut StdRng) -> [u8; HEADER_LEN] {
    let mut bytes = [0u8; HEADER_LEN];
    rng.fill(&mut bytes[..]);
    bytes
}

#[test]
fn the_allocation_counter_counts() {
    let (v, allocated) = allocated_by(|| vec![1u8; 100]);
    assert!(allocated >= 100 && v.len() == 100);
}

#[test]
fn a_frame_declaring_4_gib_is_refused_from_its_header() {
    let mut header = FrameHeader::seal(&FrameMeta::request(Command::Produce, 1), &[], &[]).unwrap();
    header.body_len = u32::MAX;
    header.header_crc32c = header.compute_header_crc();
    let framer = Framer::default();
    let mut buf = BytesMut::from(&header.encode()[..]);
    let (result, allocated) = allocated_by(|| framer.split_frame(&mut buf));
    assert_eq!(
        result,
        Err(FrameError::Invalid {
            offset: offset::BODY_LEN,
            reason: FrameFault::Header(HeaderError::FrameTooLarge {
                frame_len: HEADER_LEN as u64 + u64::from(u32::MAX),
                frame_len_max: framer.limits().frame_len_max,
            }),
        })
    );
    assert_eq!(allocated, 0, "nothing reserved for a refused frame");
}

#[test]
fn batches_survive_mutation() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xBA7C);
    for _ in 0..ITERATIONS {
        let batch = random_batch(&mut rng);
        let len = batch.len();
        assert_eq!(batch_verdict(&batch, seed), Ok(len));

        let cut = rng.random_range(0..len);
        assert!(
            matches!(
                batch_verdict(&batch[..cut], seed),
                Err(BatchError::Incomplete { .. })
            ),
            "seed {seed}: cut at {cut}"
        );

        // Every bit is checksummed, the stamped offset and append time included.
        let mut flipped = batch.clone();
        let bits = flip_bits(&mut rng, &mut flipped, 0..len);
        assert!(
            batch_verdict(&flipped, seed).is_err(),
            "seed {seed}: bits {bits:?}"
        );

        // A huge length is refused from the header alone.
        let mut huge = batch[..BATCH_HEADER_LEN].to_vec();
        let declared = rng.random_range(BATCH_LEN_MAX as u32 + 1..=u32::MAX);
        huge[..4].copy_from_slice(&declared.to_le_bytes());
        assert!(matches!(
            batch_verdict(&huge, seed),
            Err(BatchError::TooLarge { .. })
        ));

        // Corrupt a record field and re-checksum the batch: the record checks must catch it.
        let mut forged = batch.clone();
        let at = rng.random_range(BATCH_HEADER_LEN_V3..len - 3);
        let value: u32 = if rng.random_bool(0.5) {
            u32::MAX - rng.random_range(0..16)
        } else {
            rng.random()
        };
        forged[at..at + 4].copy_from_slice(&value.to_le_bytes());
        reseal(&mut forged);
        if forged != batch {
            assert!(
                batch_verdict(&forged, seed).is_err(),
                "seed {seed}: forged u32 {value:#x} at {at}"
            );
        }

        let mut longer = batch.clone();
        longer.extend_from_slice(&random_bytes(&mut rng, 64));
        assert_eq!(batch_verdict(&longer, seed), Ok(len));

        let _ = batch_verdict(&random_bytes(&mut rng, 256), seed);
    }
}

#[test]
fn control_decode_survives_mutation() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC0DE);
    for _ in 0..ITERATIONS {
        let mut bytes = random_control(&mut rng);
        match rng.random_range(0..4) {
            0 => bytes.truncate(rng.random_range(0..bytes.len())),
            1 => {
                let len = bytes.len();
                flip_bits(&mut rng, &mut bytes, 0..len);
            }
            2 => bytes.extend_from_slice(&random_bytes(&mut rng, 32)),
            _ => bytes = random_bytes(&mut rng, 128),
        }
        let (_, allocated) = allocated_by(|| {
            let _ = control::decode::<TopicConfig>(&bytes);
            let _ = control::decode::<ErrorReply>(&bytes);
            let _ = control::decode::<TopicRoute>(&bytes);
            let _ = control::decode::<GslResolveReply>(&bytes);
            let _ = control::decode::<FlushMode>(&bytes);
        });
        // Five decodes, each owning at most a few times its input plus error messages.
        assert!(
            allocated <= 5 * (16 * bytes.len() + 4096),
            "seed {seed}: {allocated} bytes allocated decoding {} bytes",
            bytes.len()
        );
    }
}
