//! Golden bytes: the exact wire and disk layout of a frame and a record batch, pinned forever.
//!
//! If one of these tests fails, a change altered the format that peers and stored segments
//! depend on. Do not update the bytes: bump the version and keep reading the old layout.
//! The checksums were cross-checked against an independent bitwise CRC32C (Castagnoli).

use protocol::codes::{Command, Status};
use protocol::frame::{
    ExtField, FrameHeader, FrameMeta, Framer, HEADER_LEN, MAGIC, VERSION, encode_ext, encode_frame,
    flag,
};
use protocol::record::{
    BATCH_LEN_MAX, BATCH_VERSION_V2, BatchBuilder, BatchHeader, BatchView, MessageType,
    ProducerFields, Property, Record, set_producer, stamp,
};

/// A `CreateTopic` request, id `0x0102030405060708`, with one extension field (tag 1, `"tr"`)
/// and the body `"hello"`.
#[rustfmt::skip]
const GOLDEN_FRAME: &[u8] = &[
    // magic "DFB1", version 1, flags REQUEST, command 0x0201 (CreateTopic)
    0x44, 0x46, 0x42, 0x31, 0x01, 0x01, 0x01, 0x02,
    // request id 0x0102030405060708
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
    // status 0, six reserved zero bytes
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // ext_len 8, body_len 5
    0x08, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
    // header CRC32C 0x3821ee27, body CRC32C (ext + body) 0xe99adb05
    0x27, 0xee, 0x21, 0x38, 0x05, 0xdb, 0x9a, 0xe9,
    // extension: tag 1, len 2, "tr", two bytes of zero padding
    0x01, 0x00, 0x02, 0x00, 0x74, 0x72, 0x00, 0x00,
    // body "hello"
    0x68, 0x65, 0x6c, 0x6c, 0x6f,
];

const REQUEST_ID: u64 = 0x0102_0304_0506_0708;

fn golden_frame_header() -> FrameHeader {
    FrameHeader {
        magic: MAGIC,
        version: VERSION,
        flags: flag::REQUEST,
        command: Command::CreateTopic.code(),
        request_id: REQUEST_ID,
        status: Status::Ok.code(),
        reserved: [0; 6],
        ext_len: 8,
        body_len: 5,
        header_crc32c: 0x3821_ee27,
        body_crc32c: 0xe99a_db05,
    }
}

#[test]
fn frame_encodes_to_the_golden_bytes() {
    let mut ext = Vec::new();
    encode_ext(
        &[ExtField {
            tag: 1,
            value: b"tr",
        }],
        &mut ext,
    )
    .unwrap();
    let mut out = Vec::new();
    let meta = FrameMeta::request(Command::CreateTopic, REQUEST_ID);
    encode_frame(&meta, &ext, b"hello", &mut out).unwrap();
    assert_eq!(out, GOLDEN_FRAME);
    assert_eq!(golden_frame_header().encode(), GOLDEN_FRAME[..HEADER_LEN]);
}

#[test]
fn golden_frame_decodes_to_the_expected_fields() {
    assert_eq!(
        FrameHeader::decode(GOLDEN_FRAME).unwrap(),
        golden_frame_header()
    );
    let frame = Framer::default().parse(GOLDEN_FRAME).unwrap();
    assert_eq!(frame.header, golden_frame_header());
    assert_eq!(frame.header.command(), Ok(Command::CreateTopic));
    assert_eq!(frame.body, b"hello");
    assert_eq!(
        frame.ext_fields().collect::<Vec<_>>(),
        [ExtField {
            tag: 1,
            value: b"tr"
        }]
    );
}

/// One request record carrying every property kind, stamped at offset 1000, in a version-2
/// batch as brokers before issue 15 stored it: still read, never built.
#[rustfmt::skip]
const GOLDEN_BATCH_V2: &[u8] = &[
    // batch_len 132, batch CRC32C of bytes [24, 48), then the record head [48, 56), then the
    // stamped fields [8, 24) (0x49058135, cross-checked with an independent bitwise CRC32C in
    // Python)
    0x84, 0x00, 0x00, 0x00, 0x35, 0x81, 0x05, 0x49,
    // base_offset 1000 (stamped)
    0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // append_time_ms 1_700_000_000_999 (stamped)
    0xe7, 0x6b, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // record_count 1, version 2, attributes 0, reserved 0
    0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
    // first_timestamp_ms 1_700_000_000_000
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // max_timestamp_ms 1_700_000_000_000
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // record: record_len 84, record CRC32C of its bytes [8, 84)
    0x54, 0x00, 0x00, 0x00, 0x30, 0x0e, 0xb3, 0x43,
    // offset_delta 0, attributes 1 (Request), key_len 3
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00,
    // timestamp_ms 1_700_000_000_000
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // properties_len 44, value_len 5
    0x2c, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
    // key "key"; ReplyTo (1) len 2 "c1"
    0x6b, 0x65, 0x79, 0x01, 0x02, 0x00, 0x63, 0x31,
    // CorrelationId (2) len 2 "id"; DeadlineMs (3) len 8 ...
    0x02, 0x02, 0x00, 0x69, 0x64, 0x03, 0x08, 0x00,
    // ... 0x0102030405060708
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
    // Area (4) len 3 "A10"; Tag (5) len 4 ...
    0x04, 0x03, 0x00, 0x41, 0x31, 0x30, 0x05, 0x04,
    // ... "gray"; User (0x80) len 3 ...
    0x00, 0x67, 0x72, 0x61, 0x79, 0x80, 0x03, 0x00,
    // ... key_len 1 "k" "v"; Unknown (0x42) len 1 "?"; value "h" ...
    0x01, 0x6b, 0x76, 0x42, 0x01, 0x00, 0x3f, 0x68,
    // ... "ello"
    0x65, 0x6c, 0x6c, 0x6f,
];

/// The same record in a version-3 batch of producer `0x0102030405060708`, epoch 3, sequence 7
/// (issue 15), stamped at offset 1000.
#[rustfmt::skip]
const GOLDEN_BATCH_V3: &[u8] = &[
    // batch_len 148, batch CRC32C of bytes [24, 48), the record head [64, 72), the producer
    // fields [48, 64), then the stamped fields [8, 24) (0x8344de7f, cross-checked with an
    // independent bitwise CRC32C in Python)
    0x94, 0x00, 0x00, 0x00, 0x7f, 0xde, 0x44, 0x83,
    // base_offset 1000 (stamped)
    0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // append_time_ms (stamped)
    0xe7, 0x6b, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // record_count 1, version 3, attributes 0, reserved 0
    0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
    // first_timestamp_ms
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // max_timestamp_ms
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // producer_id 0x0102030405060708
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
    // producer_epoch 3, sequence 7
    0x03, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00,
    // the record, as in GOLDEN_BATCH_V2
    0x54, 0x00, 0x00, 0x00, 0x30, 0x0e, 0xb3, 0x43,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00,
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    0x2c, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
    0x6b, 0x65, 0x79, 0x01, 0x02, 0x00, 0x63, 0x31,
    0x02, 0x02, 0x00, 0x69, 0x64, 0x03, 0x08, 0x00,
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
    0x04, 0x03, 0x00, 0x41, 0x31, 0x30, 0x05, 0x04,
    0x00, 0x67, 0x72, 0x61, 0x79, 0x80, 0x03, 0x00,
    0x01, 0x6b, 0x76, 0x42, 0x01, 0x00, 0x3f, 0x68,
    0x65, 0x6c, 0x6c, 0x6f,
];

const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const APPEND_TIME_MS: i64 = 1_700_000_000_999;

fn golden_properties() -> [Property<'static>; 7] {
    [
        Property::ReplyTo("c1"),
        Property::CorrelationId(b"id"),
        Property::DeadlineMs(0x0102_0304_0506_0708),
        Property::Area("A10".parse().unwrap()),
        Property::Tag("gray"),
        Property::User {
            key: "k",
            value: b"v",
        },
        Property::Unknown {
            tag: 0x42,
            value: b"?",
        },
    ]
}

#[test]
fn batch_encodes_to_the_golden_bytes() {
    let properties = golden_properties();
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    builder
        .push(&Record {
            timestamp_ms: TIMESTAMP_MS,
            message_type: MessageType::Request,
            key: b"key",
            properties: &properties,
            value: b"hello",
        })
        .unwrap();
    let sealed = builder.seal().unwrap();
    let mut batch = sealed.bytes;
    let producer = ProducerFields {
        producer_id: 0x0102_0304_0506_0708,
        epoch: 3,
        sequence: 7,
    };
    set_producer(&mut batch, sealed.records_crc, producer).unwrap();
    stamp(&mut batch, 1000, APPEND_TIME_MS).unwrap();
    assert_eq!(batch, GOLDEN_BATCH_V3);
    let view = BatchView::parse(GOLDEN_BATCH_V3, BATCH_LEN_MAX).unwrap();
    assert_eq!(view.producer(), Some(producer));
    assert_eq!(view.records().next().unwrap().value(), b"hello");
}

#[test]
fn golden_batch_decodes_to_the_expected_record() {
    let batch = BatchView::parse(GOLDEN_BATCH_V2, BATCH_LEN_MAX).unwrap();
    assert_eq!(batch.producer(), None);
    assert_eq!(
        *batch.header(),
        BatchHeader {
            batch_len: 132,
            crc32c: 0x4905_8135,
            base_offset: 1000,
            append_time_ms: APPEND_TIME_MS,
            record_count: 1,
            version: BATCH_VERSION_V2,
            attributes: 0,
            reserved: 0,
            first_timestamp_ms: TIMESTAMP_MS,
            max_timestamp_ms: TIMESTAMP_MS,
        }
    );
    let records: Vec<_> = batch.records().collect();
    assert_eq!(records.len(), 1);
    let record = records[0];
    assert_eq!(record.offset(), 1000);
    assert_eq!(record.timestamp_ms(), TIMESTAMP_MS);
    assert_eq!(record.message_type(), MessageType::Request);
    assert_eq!(record.key(), b"key");
    assert_eq!(record.value(), b"hello");
    let properties: Vec<_> = record.properties().map(Result::unwrap).collect();
    assert_eq!(properties, golden_properties());
    assert_eq!(record.reply_to(), Some("c1"));
    assert_eq!(record.deadline_ms(), Some(0x0102_0304_0506_0708));
}

/// The trace context properties of a record (issue 14): `traceparent` as 25 bytes, then
/// `tracestate` as its text.
#[rustfmt::skip]
const GOLDEN_TRACE_PROPERTIES: &[u8] = &[
    // TraceParent (6) len 25; trace id 4bf92f3577b34da6a3ce929d0e0e4736 ...
    0x06, 0x19, 0x00, 0x4b, 0xf9, 0x2f, 0x35, 0x77,
    0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e,
    // ... parent id 00f067aa0ba902b7, flags 01
    0x0e, 0x47, 0x36, 0x00, 0xf0, 0x67, 0xaa, 0x0b,
    0xa9, 0x02, 0xb7, 0x01,
    // TraceState (7) len 6 "rojo=1"
    0x07, 0x06, 0x00, 0x72, 0x6f, 0x6a, 0x6f, 0x3d, 0x31,
];

#[test]
fn trace_context_properties_encode_to_the_golden_bytes() {
    let parent: protocol::trace::TraceParent =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap();
    let properties = [
        Property::TraceParent(parent),
        Property::TraceState("rojo=1"),
    ];
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    builder
        .push(&Record {
            timestamp_ms: TIMESTAMP_MS,
            message_type: MessageType::Event,
            key: b"",
            properties: &properties,
            value: b"v",
        })
        .unwrap();
    let batch = builder.finish().unwrap();
    let view = BatchView::parse(&batch, BATCH_LEN_MAX).unwrap();
    let record = view.records().next().unwrap();
    assert_eq!(record.properties_bytes(), GOLDEN_TRACE_PROPERTIES);
    assert_eq!(record.trace_parent(), Some(parent));
    assert_eq!(record.trace_state(), Some("rojo=1"));
}

#[test]
fn a_stored_trace_context_that_breaks_the_rules_fails_the_batch() {
    // A hand-built batch, not our encoder, is the only way to store these: the parse that
    // every append runs refuses them, naming the property.
    for (tag, value) in [
        (6u8, &[0u8; 25][..]),
        (6, &[1; 24][..]),
        (7, b"Bad=1"),
        (7, b"a=1, b=2"),
    ] {
        let properties = [Property::Unknown { tag, value }];
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        builder
            .push(&Record {
                timestamp_ms: TIMESTAMP_MS,
                message_type: MessageType::Event,
                key: b"",
                properties: &properties,
                value: b"v",
            })
            .unwrap();
        let batch = builder.finish().unwrap();
        let error = BatchView::parse(&batch, BATCH_LEN_MAX)
            .unwrap_err()
            .to_string();
        let name = if tag == 6 {
            "traceparent"
        } else {
            "tracestate"
        };
        assert!(error.contains(name), "{error}");
    }
}
