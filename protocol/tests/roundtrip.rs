//! Property tests: everything encoded by this crate decodes back to what was encoded.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use protocol::codes::{Command, Status};
use protocol::control::{
    self, Acks, BrokerId, BrokerRegistration, BrokerStats, BrokerSummary, ClientHeartbeat,
    ClusterInfo, CommitOffset, Credit, Deployment, ErrorReply, FetchOffset, FlushMode,
    FollowerStatus, GroupQueueStats, GslResolveReply, GslResolveRequest, GslUpdate, HeartbeatAck,
    OffsetReply, ProduceAck, QueueDamage, QueueReplication, QueueRoute, QueueStats, RedirectRule,
    RegisterAck, ReplicaRole, ServiceRecord, ServiceState, ShardStats, SkippedOffsets,
    StartPosition, Subscribe, SubscribeAck, SubscriptionMode, TopicConfig, TopicInfo, TopicList,
    TopicName, TopicRoute, Unsubscribe,
};
use protocol::data::BatchAddress;
use protocol::frame::{
    ExtField, FrameHeader, FrameLimits, FrameMeta, Framer, HEADER_LEN, encode_ext, encode_frame,
};
use protocol::names::{Area, ClientId, GroupName, ServiceId, Topic};
use protocol::record::{
    BATCH_LEN_MAX, BatchBuilder, BatchView, MessageType, Property, Record, stamp,
};

// ---------------------------------------------------------------- names

const AREA: &str = "[A-Z0-9]{3}";
const SERVICE_ID: &str = "[A-Za-z0-9_.]{1,64}";

proptest! {
    #[test]
    fn names_parse_and_display_back(
        area in AREA,
        service in SERVICE_ID,
        group in "[A-Za-z0-9_.-]{1,128}",
        client in "[A-Za-z0-9_.:@#/-]{1,128}",
    ) {
        prop_assert_eq!(area.parse::<Area>().unwrap().to_string(), area.as_str());
        prop_assert_eq!(service.parse::<ServiceId>().unwrap().to_string(), service.as_str());
        let name = format!("{area}-{service}");
        let topic: Topic = name.parse().unwrap();
        prop_assert_eq!(topic.to_string(), name.as_str());
        prop_assert_eq!(topic.area().to_string(), area.as_str());
        prop_assert_eq!(topic.service().as_str(), service.as_str());
        prop_assert_eq!(group.parse::<GroupName>().unwrap().to_string(), group.as_str());
        prop_assert_eq!(client.parse::<ClientId>().unwrap().to_string(), client.as_str());
    }

    #[test]
    fn name_parsers_never_panic(s in ".{0,80}") {
        let _ = s.parse::<Area>();
        let _ = s.parse::<ServiceId>();
        let _ = s.parse::<Topic>();
        let _ = s.parse::<GroupName>();
        let _ = s.parse::<ClientId>();
    }
}

// ---------------------------------------------------------------- frames

fn any_command() -> impl Strategy<Value = Command> {
    proptest::sample::select(Command::ALL)
}

fn any_status() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL)
}

/// Valid sender choices: request, oneway request or response, with the body checksum
/// omitted only where the command allows it.
fn any_meta() -> impl Strategy<Value = FrameMeta> {
    (
        any_command(),
        any_status(),
        any::<u64>(),
        0..3u8,
        any::<bool>(),
    )
        .prop_map(|(command, status, request_id, kind, omit_crc)| {
            let meta = match kind {
                0 => FrameMeta::request(command, request_id),
                1 => FrameMeta::oneway(command, request_id),
                _ => {
                    let request = FrameHeader {
                        command: command.code(),
                        request_id,
                        ..FrameHeader::default()
                    };
                    FrameMeta::response(&request, status)
                }
            };
            if omit_crc && command.carries_record_batch() {
                meta.without_body_crc()
            } else {
                meta
            }
        })
}

fn any_ext_fields() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    vec((1..=u16::MAX, vec(any::<u8>(), 0..24)), 0..4)
}

proptest! {
    #[test]
    fn frame_header_encode_decode_is_identity(
        magic in any::<u32>(), version in any::<u8>(), flags in any::<u8>(),
        command in any::<u16>(), request_id in any::<u64>(), status in any::<u16>(),
        reserved in any::<[u8; 6]>(), ext_len in any::<u32>(), body_len in any::<u32>(),
        header_crc32c in any::<u32>(), body_crc32c in any::<u32>(),
    ) {
        let header = FrameHeader {
            magic, version, flags, command, request_id, status, reserved, ext_len, body_len,
            header_crc32c, body_crc32c,
        };
        let bytes = header.encode();
        prop_assert_eq!(FrameHeader::decode(&bytes).unwrap(), header);
        let _ = header.validate(&FrameLimits::default());
    }

    #[test]
    fn frames_round_trip_through_parse_and_split(
        meta in any_meta(),
        fields in any_ext_fields(),
        body in vec(any::<u8>(), 0..2048),
        second_body in vec(any::<u8>(), 0..64),
    ) {
        let fields: Vec<ExtField<'_>> =
            fields.iter().map(|(tag, value)| ExtField { tag: *tag, value }).collect();
        let mut ext = Vec::new();
        encode_ext(&fields, &mut ext).unwrap();
        let mut wire = Vec::new();
        let len = encode_frame(&meta, &ext, &body, &mut wire).unwrap();
        prop_assert_eq!(len, HEADER_LEN + ext.len() + body.len());
        let second = FrameMeta::oneway(Command::Heartbeat, 7);
        encode_frame(&second, &[], &second_body, &mut wire).unwrap();

        let framer = Framer::default();
        let info = framer.check(&wire).unwrap();
        prop_assert_eq!(info.frame_len, len);
        let frame = framer.parse(&wire).unwrap();
        prop_assert_eq!(frame.header, info.header);
        prop_assert_eq!(
            (frame.header.command, frame.header.flags, frame.header.request_id, frame.header.status),
            (meta.command, meta.flags, meta.request_id, meta.status)
        );
        prop_assert_eq!(frame.ext, &ext[..]);
        prop_assert_eq!(frame.body, &body[..]);
        prop_assert_eq!(frame.ext_fields().collect::<Vec<_>>(), fields);

        let mut buf = BytesMut::from(&wire[..]);
        let first = framer.split_frame(&mut buf).unwrap().unwrap();
        prop_assert_eq!(first.as_frame(), frame);
        let next = framer.split_frame(&mut buf).unwrap().unwrap();
        prop_assert_eq!(&next.body[..], &second_body[..]);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(framer.split_frame(&mut buf), Ok(None));
    }
}

#[test]
fn control_bodies_stay_aligned_for_in_place_access() {
    let config = TopicConfig::new(&"A10-20190001".parse().unwrap());
    let body = control::encode(&config).unwrap();
    let mut ext = Vec::new();
    encode_ext(
        &[ExtField {
            tag: 9,
            value: b"abc",
        }],
        &mut ext,
    )
    .unwrap();
    let mut wire = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::CreateTopic, 1),
        &ext,
        &body,
        &mut wire,
    )
    .unwrap();
    // Socket buffers start aligned; the header and padded extension keep the body so.
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&wire);
    let frame = Framer::default().parse(&aligned).unwrap();
    let archived = control::access::<TopicConfig>(frame.body).unwrap();
    assert_eq!(archived.topic.as_str(), "A10-20190001");
    assert_eq!(archived.max_queue_depth, 500);
}

// ---------------------------------------------------------------- record batches

/// An owned property, so strategies can generate them; borrowed as a [`Property`] to encode.
#[derive(Clone, Debug)]
enum OwnedProperty {
    ReplyTo(String),
    CorrelationId(Vec<u8>),
    DeadlineMs(u64),
    Area(Area),
    Tag(String),
    TraceParent(protocol::trace::TraceParent),
    TraceState(String),
    DeliverAtMs(u64),
    HeldOrigin(u64),
    TxnGroup(String),
    User { key: String, value: Vec<u8> },
    Unknown { tag: u8, value: Vec<u8> },
}

impl OwnedProperty {
    fn borrow(&self) -> Property<'_> {
        match self {
            Self::ReplyTo(s) => Property::ReplyTo(s),
            Self::CorrelationId(b) => Property::CorrelationId(b),
            Self::DeadlineMs(ms) => Property::DeadlineMs(*ms),
            Self::Area(a) => Property::Area(*a),
            Self::Tag(s) => Property::Tag(s),
            Self::TraceParent(p) => Property::TraceParent(*p),
            Self::TraceState(s) => Property::TraceState(s),
            Self::DeliverAtMs(ms) => Property::DeliverAtMs(*ms),
            Self::HeldOrigin(o) => Property::HeldOrigin(*o),
            Self::TxnGroup(s) => Property::TxnGroup(s),
            Self::User { key, value } => Property::User { key, value },
            Self::Unknown { tag, value } => Property::Unknown { tag: *tag, value },
        }
    }
}

fn any_property() -> impl Strategy<Value = OwnedProperty> {
    let bytes = || vec(any::<u8>(), 0..32);
    prop_oneof![
        ".{0,24}".prop_map(OwnedProperty::ReplyTo),
        bytes().prop_map(OwnedProperty::CorrelationId),
        any::<u64>().prop_map(OwnedProperty::DeadlineMs),
        AREA.prop_map(|a| OwnedProperty::Area(a.parse().unwrap())),
        ".{0,24}".prop_map(OwnedProperty::Tag),
        (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>()).prop_filter_map(
            "ids of zeros are no traceparent",
            |(trace, parent, flags)| protocol::trace::TraceParent::new(trace, parent, flags)
                .ok()
                .map(OwnedProperty::TraceParent)
        ),
        r"[a-z][a-z0-9]{0,8}=[!-+\x2d-<>-~]{1,16}".prop_map(OwnedProperty::TraceState),
        (".{0,40}", bytes()).prop_map(|(key, value)| OwnedProperty::User { key, value }),
        any::<u64>().prop_map(OwnedProperty::DeliverAtMs),
        any::<u64>().prop_map(OwnedProperty::HeldOrigin),
        "[a-z][a-z0-9_-]{0,20}".prop_map(OwnedProperty::TxnGroup),
        // Tags no reader of this version knows: skipped and forwarded, never misread.
        // Tags 9-11 are held messages' (§13.3-§13.4) and 12 the retry mark (§13.2), checked
        // when read.
        (prop_oneof![8..9u8, 13..0x80u8, 0x81..=u8::MAX], bytes())
            .prop_map(|(tag, value)| OwnedProperty::Unknown { tag, value }),
    ]
}

#[derive(Clone, Debug)]
struct OwnedRecord {
    timestamp_ms: i64,
    message_type: MessageType,
    key: Vec<u8>,
    properties: Vec<OwnedProperty>,
    value: Vec<u8>,
}

fn any_record() -> impl Strategy<Value = OwnedRecord> {
    (
        any::<i64>(),
        proptest::sample::select(vec![
            MessageType::Event,
            MessageType::Request,
            MessageType::Reply,
        ]),
        vec(any::<u8>(), 0..16),
        vec(any_property(), 0..8),
        vec(any::<u8>(), 0..256),
    )
        .prop_map(
            |(timestamp_ms, message_type, key, properties, value)| OwnedRecord {
                timestamp_ms,
                message_type,
                key,
                properties,
                value,
            },
        )
}

proptest! {
    #[test]
    fn record_batches_round_trip_and_survive_stamping(
        records in vec(any_record(), 1..12),
        base_offset in any::<u64>(),
        append_time_ms in any::<i64>(),
    ) {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        for r in &records {
            let properties: Vec<Property<'_>> = r.properties.iter().map(OwnedProperty::borrow).collect();
            builder.push(&Record {
                timestamp_ms: r.timestamp_ms,
                message_type: r.message_type,
                key: &r.key,
                properties: &properties,
                value: &r.value,
            }).unwrap();
        }
        let mut bytes = builder.finish().unwrap();
        let base_offset = base_offset.min(u64::MAX - records.len() as u64);
        stamp(&mut bytes, base_offset, append_time_ms).unwrap();
        let batch = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
        prop_assert_eq!(batch.len(), bytes.len());
        prop_assert_eq!(batch.base_offset(), base_offset);
        prop_assert_eq!(batch.header().append_time_ms, append_time_ms);
        prop_assert_eq!(batch.next_offset(), base_offset + records.len() as u64);
        prop_assert_eq!(batch.header().first_timestamp_ms, records[0].timestamp_ms);
        let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap();
        prop_assert_eq!(batch.header().max_timestamp_ms, max_ts);
        let views: Vec<_> = batch.records().collect();
        prop_assert_eq!(views.len(), records.len());
        for (i, (view, want)) in views.iter().zip(&records).enumerate() {
            prop_assert_eq!(view.offset(), base_offset + i as u64);
            prop_assert_eq!(view.timestamp_ms(), want.timestamp_ms);
            prop_assert_eq!(view.message_type(), want.message_type);
            prop_assert_eq!(view.key(), &want.key[..]);
            prop_assert_eq!(view.value(), &want.value[..]);
            let got: Vec<Property<'_>> = view.properties().map(Result::unwrap).collect();
            let want: Vec<Property<'_>> = want.properties.iter().map(OwnedProperty::borrow).collect();
            prop_assert_eq!(got, want);
        }
        // Restamping (a broker re-appending after recovery) keeps the batch valid too.
        stamp(&mut bytes, 0, 0).unwrap();
        prop_assert!(BatchView::parse(&bytes, BATCH_LEN_MAX).is_ok());
    }
}

// ---------------------------------------------------------------- control payloads

fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

fn flush_mode() -> impl Strategy<Value = FlushMode> {
    prop_oneof![Just(FlushMode::Async), Just(FlushMode::Sync)]
}

prop_compose! {
    fn topic_info()(
        topic in text(), queue_count in any::<u32>(), read_queue_count in any::<u32>(),
        write_queue_count in any::<u32>(), flush_mode in flush_mode(),
        max_queue_depth in any::<u64>(), queue_depths in vec(any::<u64>(), 0..8),
        retention_bytes in any::<Option<u64>>(), retention_age_ms in any::<Option<u64>>(),
        redirects in vec(redirect_rule(), 0..3), dynamic_queues in any::<bool>(),
        replicas in any::<u8>(), all in any::<bool>(),
    ) -> TopicInfo {
        let acks = if all { Acks::All } else { Acks::Leader };
        TopicInfo {
            topic, queue_count, read_queue_count, write_queue_count, flush_mode,
            max_queue_depth, queue_depths, retention_bytes, retention_age_ms, redirects,
            dynamic_queues, replicas, acks, replication: Vec::new(),
        }
    }
}

prop_compose! {
    fn registration()(
        broker_id in text(), cluster in text(), area in text(), address in text(),
        shard_ports in vec(any::<u16>(), 0..8), topics in vec(topic_info(), 0..4),
    ) -> BrokerRegistration {
        BrokerRegistration { broker_id, cluster, area, address, shard_ports, topics }
    }
}

prop_compose! {
    fn queue_route()(
        broker_id in text(), cluster in text(), area in text(), address in text(),
        shard_port in any::<u16>(), queue_id in any::<u32>(),
        readable in any::<bool>(), writable in any::<bool>(),
    ) -> QueueRoute {
        QueueRoute { broker_id, cluster, area, address, shard_port, queue_id, readable, writable }
    }
}

prop_compose! {
    fn broker_summary()(
        broker_id in text(), cluster in text(), area in text(), address in text(),
        shard_ports in vec(any::<u16>(), 0..8), topic_count in any::<u32>(),
        last_heartbeat_ms in any::<i64>(),
    ) -> BrokerSummary {
        BrokerSummary {
            broker_id, cluster, area, address, shard_ports, topic_count, last_heartbeat_ms,
        }
    }
}

prop_compose! {
    fn topic_config()(
        topic in text(), queue_count in any::<u32>(), read_queue_count in any::<u32>(),
        write_queue_count in any::<u32>(), flush_mode in flush_mode(),
        max_queue_depth in any::<u64>(), retention_bytes in any::<Option<u64>>(),
        retention_age_ms in any::<Option<u64>>(), redirects in vec(redirect_rule(), 0..3),
        dynamic_queues in any::<bool>(), replicas in any::<u8>(), all in any::<bool>(),
    ) -> TopicConfig {
        let acks = if all { Acks::All } else { Acks::Leader };
        TopicConfig {
            topic, queue_count, read_queue_count, write_queue_count, flush_mode,
            max_queue_depth, retention_bytes, retention_age_ms, redirects, dynamic_queues,
            replicas, acks,
        }
    }
}

prop_compose! {
    fn redirect_rule()(
        group in text(), flag in text(), instances in vec(text(), 0..3),
    ) -> RedirectRule {
        RedirectRule { group, flag, instances }
    }
}

prop_compose! {
    fn service_record()(
        service_id in text(), name in text(), owner in text(),
        deployed_areas in vec(text(), 0..4), queue_count in any::<u32>(),
        max_queue_depth in any::<u64>(), flush_mode in flush_mode(),
        state in prop_oneof![
            Just(ServiceState::Applied), Just(ServiceState::Deployed), Just(ServiceState::Offline)
        ],
    ) -> ServiceRecord {
        ServiceRecord {
            service_id, name, owner, deployed_areas, queue_count, max_queue_depth, flush_mode,
            state,
        }
    }
}

prop_compose! {
    fn deployment()(
        area in text(), topic in text(), cluster in text(), nameservers in vec(text(), 0..3),
    ) -> Deployment {
        Deployment { area, topic, cluster, nameservers }
    }
}

/// Encodes, then decodes both from the encoder's buffer and from a copy at an odd address.
fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: PartialEq + std::fmt::Debug + rkyv::Archive,
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let bytes = control::encode(value).unwrap();
    prop_assert_eq!(&control::decode::<T>(&bytes).unwrap(), value);
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    prop_assert_eq!(&control::decode::<T>(&shifted[1..]).unwrap(), value);
    Ok(())
}

proptest! {
    #[test]
    fn control_payloads_round_trip(
        reg in registration(),
        route_topic in text(),
        queues in vec(queue_route(), 0..6),
        brokers in vec(broker_summary(), 0..4),
        config in topic_config(),
        record in service_record(),
        service_id in text(),
        caller_area in text(),
        deployments in vec(deployment(), 0..4),
        status in any::<u16>(),
        message in ".{0,64}",
    ) {
        round_trip(&reg)?;
        round_trip(&TopicRoute { topic: route_topic, queues })?;
        round_trip(&ClusterInfo { brokers })?;
        round_trip(&config)?;
        round_trip(&record)?;
        round_trip(&GslResolveRequest { service_id: service_id.clone(), caller_area })?;
        round_trip(&GslResolveReply { deployments: deployments.clone() })?;
        round_trip(&GslUpdate { service_id, deployments })?;
        round_trip(&ErrorReply { status, message })?;
    }
}

// ---------------------------------------------------------------- data plane

proptest! {
    #[test]
    fn batch_addresses_round_trip(
        topic in ".{0,20}", queue_id in any::<u32>(), subscription_id in any::<Option<u64>>(),
    ) {
        let address = BatchAddress { topic: &topic, queue_id, subscription_id };
        let mut ext = Vec::new();
        address.encode(&mut ext).unwrap();
        prop_assert_eq!(BatchAddress::decode(&ext).unwrap(), address);
    }

    #[test]
    fn batch_address_decoding_never_panics(ext in vec(any::<u8>(), 0..64)) {
        let _ = BatchAddress::decode(&ext);
    }
}

fn subscription_mode() -> impl Strategy<Value = SubscriptionMode> {
    prop_oneof![
        Just(SubscriptionMode::Clustering),
        Just(SubscriptionMode::Broadcast)
    ]
}

fn start_position() -> impl Strategy<Value = StartPosition> {
    prop_oneof![
        Just(StartPosition::Committed),
        Just(StartPosition::Earliest),
        Just(StartPosition::Latest)
    ]
}

prop_compose! {
    fn subscribe()(
        topic in text(), group in text(), client_id in text(), area in text(),
        mode in subscription_mode(), start in start_position(), credit_messages in any::<u32>(),
    ) -> Subscribe {
        Subscribe { topic, group, client_id, area, mode, start, credit_messages }
    }
}

prop_compose! {
    fn queue_stats()(
        topic in text(), queue_id in any::<u32>(), shard_id in any::<u32>(),
        start_offset in any::<u64>(), next_offset in any::<u64>(),
        expired_requests in any::<u64>(),
        damage in any::<Option<(u64, String)>>(),
        skipped in vec((any::<u64>(), any::<u64>(), text()), 0..3),
        groups in vec((text(), text(), any::<u64>(), any::<Option<u64>>()), 0..3),
    ) -> QueueStats {
        let groups = groups
            .into_iter()
            .map(|(group, client_id, delivered_offset, committed_offset)| GroupQueueStats {
                group, client_id, delivered_offset, committed_offset,
            })
            .collect();
        let damage = damage.map(|(offset, detail)| QueueDamage { offset, detail });
        let skipped = skipped
            .into_iter()
            .map(|(from, to, reason)| SkippedOffsets { from, to, reason })
            .collect();
        let replication = (queue_id % 2 == 0).then(|| QueueReplication {
            queue_id,
            epoch: next_offset,
            role: ReplicaRole::Leader,
            committed: start_offset,
            log_end: next_offset,
            followers: vec![FollowerStatus {
                broker_id: topic.clone(),
                durable_end: start_offset,
                in_sync: true,
                lagging: false,
                caught_up: false,
            }],
            replicas: vec![topic.clone()],
        });
        QueueStats {
            topic, queue_id, shard_id, start_offset, next_offset, expired_requests,
            expired_events: expired_requests / 2, damage, skipped, groups, replication,
        }
    }
}

proptest! {
    #[test]
    fn data_plane_payloads_round_trip(
        client_id in text(), area in text(), broker_id in text(),
        shard_id in any::<u32>(), shard_count in any::<u32>(),
        queue_id in any::<u32>(), base_offset in any::<u64>(), next_offset in any::<u64>(),
        subscribe in subscribe(),
        subscription_id in any::<u64>(), queue_ids in vec(any::<u32>(), 0..8),
        messages in any::<u32>(), offset in any::<Option<u64>>(),
    ) {
        round_trip(&ClientHeartbeat { client_id, area })?;
        round_trip(&HeartbeatAck { broker_id, shard_id, shard_count })?;
        round_trip(&ProduceAck { queue_id, base_offset, next_offset })?;
        round_trip(&FetchOffset {
            topic: subscribe.topic.clone(), group: subscribe.group.clone(), queue_id,
        })?;
        round_trip(&subscribe)?;
        round_trip(&SubscribeAck { subscription_id, queue_ids })?;
        round_trip(&Credit { subscription_id, messages })?;
        round_trip(&CommitOffset { subscription_id, queue_id, offset: base_offset })?;
        round_trip(&OffsetReply { offset })?;
        round_trip(&Unsubscribe { subscription_id })?;
        round_trip(&protocol::control::Nack {
            subscription_id, queue_id, offset: base_offset, dead_letter: messages % 2 == 0,
            reason: subscribe.group.clone(),
        })?;
        round_trip(&protocol::control::NackAck {
            topic: subscribe.topic.clone(), queue_id, offset: next_offset,
            attempt: messages, dead_lettered: messages % 3 == 0,
        })?;
    }

    #[test]
    fn admin_payloads_round_trip(
        topic in text(), topics in vec(topic_info(), 0..4), broker_id in text(),
        shards in vec((any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()), 0..4),
        queues in vec(queue_stats(), 0..4), expiry_ms in any::<u64>(),
    ) {
        round_trip(&TopicName { topic })?;
        round_trip(&TopicList { topics })?;
        let shards = shards
            .into_iter()
            .map(|(shard_id, connections, bad_frames, replies, partial_frame_bytes)| ShardStats {
                shard_id, connections, bad_frames, replies, partial_frame_bytes,
                retries_by_level: vec![replies, bad_frames], dead_letters: connections,
            })
            .collect();
        round_trip(&BrokerStats { broker_id: broker_id.clone(), shards, queues, policy_version: expiry_ms })?;
        round_trip(&RegisterAck { expiry_ms })?;
        round_trip(&BrokerId { broker_id })?;
    }
}

#[test]
fn trace_payloads_round_trip() -> Result<(), TestCaseError> {
    use protocol::control::{
        CommitTime, GroupLife, MessageLife, PushLife, ReplyLife, ReplySearch, RequestLife,
        TraceReply, TraceRequest, TraceTarget,
    };
    for target in [
        TraceTarget::Offset(7),
        TraceTarget::Newest,
        TraceTarget::Key {
            key: b"order-1".to_vec(),
            search_records: 10_000,
            matches_max: 4,
        },
    ] {
        let request = TraceRequest {
            topic: "A10-1".into(),
            queue_id: 3,
            target,
        };
        request.validate().unwrap();
        round_trip(&request)?;
    }
    let life = |committed, reply| MessageLife {
        offset: 7,
        batch_base_offset: 5,
        batch_records: 4,
        stored_ms: 1_700_000_000_000,
        created_ms: 1_699_999_999_999,
        message_type: 1,
        key: b"k".to_vec(),
        value_bytes: 12,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
        groups: vec![GroupLife {
            group: "g".into(),
            client_id: "c#A10".into(),
            pushes: vec![PushLife {
                client_id: "c#A10".into(),
                at_ms: 1,
                from_offset: 5,
                to_offset: 9,
            }],
            pushes_since_ms: 0,
            committed_offset: Some(9),
            committed,
        }],
        request: Some(RequestLife {
            reply_to: "r#A10".into(),
            correlation_id: vec![1, 2],
            deadline_ms: 5,
            reply,
        }),
    };
    let messages = vec![
        life(CommitTime::At(3), ReplySearch::NotFound),
        life(
            CommitTime::After(4),
            ReplySearch::Found(ReplyLife {
                stored_ms: 2,
                shard_id: 1,
                offset: 0,
                traceparent: None,
            }),
        ),
        life(CommitTime::Unknown("damaged".into()), ReplySearch::After(9)),
        life(
            CommitTime::NotCommitted,
            ReplySearch::Unknown("gone".into()),
        ),
    ];
    round_trip(&TraceReply {
        broker_id: "broker-a".into(),
        shard_id: 1,
        topic: "A10-1".into(),
        queue_id: 3,
        start_offset: 0,
        next_offset: 10,
        now_ms: 9,
        searched_from: 0,
        searched_to: 10,
        messages,
    })
}

#[test]
fn key_searches_outside_their_bounds_are_refused() {
    use protocol::control::{TraceRequest, TraceTarget};
    let search = |key: &[u8], search_records, matches_max| TraceRequest {
        topic: "A10-1".into(),
        queue_id: 0,
        target: TraceTarget::Key {
            key: key.to_vec(),
            search_records,
            matches_max,
        },
    };
    assert!(search(b"", 10, 1).validate().is_err());
    assert!(search(b"k", 0, 1).validate().is_err());
    assert!(search(b"k", 2_000_000, 1).validate().is_err());
    assert!(search(b"k", 10, 17).validate().is_err());
    assert!(search(b"k", 10, 16).validate().is_ok());
}
