use std::collections::HashMap;

use super::*;

/// Records what the hub sends; backlogs are set by the test.
#[derive(Default)]
struct Fake {
    sent: HashMap<usize, Vec<Rc<Chunk>>>,
    backlog: HashMap<usize, Backlog>,
    closed: Vec<(usize, u16)>,
    resumed: Vec<usize>,
}

impl Clients for Fake {
    fn send(&mut self, token: usize, chunk: &Rc<Chunk>, _now: Instant) {
        self.sent.entry(token).or_default().push(chunk.clone());
    }
    fn backlog(&self, token: usize, _now: Instant) -> Backlog {
        self.backlog.get(&token).copied().unwrap_or_default()
    }
    fn close(&mut self, token: usize, code: u16, _reason: &'static str) {
        self.closed.push((token, code));
    }
    fn resume_reading(&mut self, token: usize) {
        self.resumed.push(token);
    }
}

impl Fake {
    /// Payloads (without the 2-byte frame header) sent to `token`, and forget them.
    fn take(&mut self, token: usize) -> Vec<Vec<u8>> {
        self.sent.remove(&token).unwrap_or_default().iter().map(|c| c[2..].to_vec()).collect()
    }
}

const POLICY: Policy =
    Policy { queue_bytes: 1000, max_lag: Duration::from_secs(2), slow_close_after: Duration::from_secs(10) };

fn msg(kind: u8, tag: u8) -> Rc<Chunk> {
    frame::encode(frame::OP_BINARY, &[kind, tag])
}

fn publish(hub: &mut Hub, c: &mut Fake, kind: u8, tag: u8, now: Instant) -> bool {
    hub.publish("s", kind, 2, msg(kind, tag), now, c)
}

const PUB: usize = 1;
const LIVE: &[u8] = br#"{"event":"publisher","live":true}"#;
const NOT_LIVE: &[u8] = br#"{"event":"publisher","live":false}"#;

#[test]
fn late_joiner_gets_init_and_the_latest_group_first() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    assert!(hub.add_publisher("s", PUB, now, &mut c));
    assert_eq!(c.take(PUB), vec![br#"{"event":"stream","name":"s"}"#.to_vec()]);
    for (kind, tag) in [(1, 0), (2, 1), (3, 2), (4, 3), (2, 4), (3, 5), (9, 6)] {
        publish(&mut hub, &mut c, kind, tag, now);
    }
    hub.add_watcher("s", 10, now, &mut c);
    assert_eq!(c.take(10), vec![LIVE.to_vec(), vec![1, 0], vec![2, 4], vec![3, 5]]);
    publish(&mut hub, &mut c, 3, 7, now);
    assert_eq!(c.take(10), vec![vec![3, 7]]);
    let events = c.take(PUB);
    assert!(events.contains(&br#"{"event":"watchers","count":1}"#.to_vec()), "{events:?}");
    assert!(events.contains(&br#"{"event":"keyframe"}"#.to_vec()));
}

#[test]
fn second_publisher_is_refused_and_leaving_clears_the_cache() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_watcher("s", 10, now, &mut c);
    assert_eq!(c.take(10), vec![NOT_LIVE.to_vec()]);
    assert!(hub.add_publisher("s", PUB, now, &mut c));
    assert!(!hub.add_publisher("s", 2, now, &mut c));
    assert_eq!(c.take(10), vec![LIVE.to_vec()]);
    publish(&mut hub, &mut c, 2, 1, now);
    hub.remove_publisher("s", PUB, now, &mut c);
    assert_eq!(c.take(10), vec![vec![2, 1], NOT_LIVE.to_vec()]);
    assert!(!hub.is_live("s"));
    assert!(hub.add_publisher("s", 2, now, &mut c));
    hub.add_watcher("s", 11, now, &mut c);
    assert_eq!(c.take(11), vec![LIVE.to_vec()], "the old publisher's frames are gone");
    hub.remove_publisher("s", 2, now, &mut c);
    hub.remove_watcher("s", 10, now, &mut c);
    hub.remove_watcher("s", 11, now, &mut c);
    assert_eq!(hub.stream_count(), 0, "an unused stream is forgotten");
}

#[test]
fn slow_watcher_skips_video_until_a_key_frame_fits_but_keeps_audio() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    hub.add_watcher("s", 10, now, &mut c);
    hub.add_watcher("s", 11, now, &mut c);
    publish(&mut hub, &mut c, 2, 0, now);
    c.take(10);
    c.take(11);
    c.backlog.insert(10, Backlog { bytes: 1500, oldest_wait: Duration::ZERO });
    for (kind, tag) in [(3, 1), (4, 2), (2, 3)] {
        publish(&mut hub, &mut c, kind, tag, now);
    }
    assert_eq!(c.take(10), vec![vec![4, 2]], "video skipped, audio kept");
    assert_eq!(c.take(11), vec![vec![3, 1], vec![4, 2], vec![2, 3]], "the fast watcher gets everything");
    c.backlog.insert(10, Backlog::default());
    publish(&mut hub, &mut c, 3, 4, now);
    assert!(c.take(10).is_empty(), "a delta before the next key frame is useless");
    publish(&mut hub, &mut c, 2, 5, now);
    publish(&mut hub, &mut c, 3, 6, now);
    assert_eq!(c.take(10), vec![vec![2, 5], vec![3, 6]]);
    assert_eq!(hub.stats.messages_dropped, 3);
    // Past twice the bound even audio stops.
    c.backlog.insert(10, Backlog { bytes: 2001, oldest_wait: Duration::ZERO });
    publish(&mut hub, &mut c, 4, 7, now);
    assert!(c.take(10).is_empty());
}

#[test]
fn lag_alone_puts_a_watcher_over_its_bound() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    hub.add_watcher("s", 10, now, &mut c);
    hub.add_watcher("s", 11, now, &mut c);
    c.take(10);
    c.backlog.insert(10, Backlog { bytes: 10, oldest_wait: Duration::from_millis(2500) });
    publish(&mut hub, &mut c, 2, 0, now);
    assert!(c.take(10).is_empty());
}

#[test]
fn watcher_over_its_bound_for_ten_seconds_is_closed() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    hub.add_watcher("s", 10, now, &mut c);
    hub.add_watcher("s", 11, now, &mut c);
    c.backlog.insert(10, Backlog { bytes: 5000, oldest_wait: Duration::ZERO });
    hub.tick(now, &mut c);
    hub.tick(now + Duration::from_secs(9), &mut c);
    assert!(c.closed.is_empty());
    hub.tick(now + Duration::from_secs(10), &mut c);
    hub.tick(now + Duration::from_secs(11), &mut c);
    assert_eq!(c.closed, vec![(10, 1008)]);
    assert_eq!(hub.stats.watchers_closed_slow, 1);
}

#[test]
fn publisher_pauses_only_when_every_watcher_is_behind() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    assert!(publish(&mut hub, &mut c, 4, 0, now), "no watchers: keep reading");
    hub.add_watcher("s", 10, now, &mut c);
    hub.add_watcher("s", 11, now, &mut c);
    let behind = Backlog { bytes: 5000, oldest_wait: Duration::ZERO };
    c.backlog.insert(10, behind);
    assert!(publish(&mut hub, &mut c, 4, 1, now));
    c.backlog.insert(11, behind);
    assert!(!publish(&mut hub, &mut c, 4, 2, now));
    hub.watcher_drained("s", now, &mut c);
    assert!(c.resumed.is_empty());
    c.backlog.remove(&11);
    hub.watcher_drained("s", now, &mut c);
    assert_eq!(c.resumed, vec![PUB]);
    assert!(publish(&mut hub, &mut c, 4, 3, now));
    // Behind by an eighth of the bound is enough to pause, long before anything is skipped;
    // resuming needs one watcher back under it.
    let slightly = Backlog { bytes: POLICY.queue_bytes / 8 + 1, oldest_wait: Duration::ZERO };
    c.backlog.insert(10, slightly);
    c.backlog.insert(11, slightly);
    assert!(!publish(&mut hub, &mut c, 4, 4, now));
    assert_eq!(c.take(10).last(), Some(&vec![4, 4]), "nothing skipped");
    c.backlog.insert(11, Backlog { bytes: POLICY.queue_bytes / 8, oldest_wait: Duration::ZERO });
    hub.watcher_drained("s", now, &mut c);
    assert_eq!(c.resumed, vec![PUB, PUB]);
}

#[test]
fn watcher_count_events_are_rate_limited() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    c.take(PUB);
    for token in 10..15 {
        hub.add_watcher("s", token, now, &mut c);
    }
    let counts = |c: &mut Fake| -> Vec<String> {
        c.take(PUB).into_iter().map(|p| String::from_utf8(p).unwrap()).filter(|e| e.contains("count")).collect()
    };
    assert_eq!(counts(&mut c), vec![r#"{"event":"watchers","count":1}"#]);
    hub.tick(now + Duration::from_millis(100), &mut c);
    assert!(counts(&mut c).is_empty());
    hub.tick(now + Duration::from_millis(260), &mut c);
    assert_eq!(counts(&mut c), vec![r#"{"event":"watchers","count":5}"#]);
}

#[test]
fn a_publisher_that_does_not_read_gets_no_events_until_it_does() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    c.take(PUB);
    c.backlog.insert(PUB, Backlog { bytes: EVENT_BACKLOG_LIMIT + 1, oldest_wait: Duration::ZERO });
    for w in 10..20 {
        hub.add_watcher("s", w, now, &mut c);
        hub.tick(now + Duration::from_secs(w as u64), &mut c);
    }
    assert!(c.take(PUB).is_empty(), "nothing piles up for a publisher that is not reading");
    c.backlog.insert(PUB, Backlog::default());
    hub.tick(now + Duration::from_secs(60), &mut c);
    let events = c.take(PUB);
    assert!(events.contains(&br#"{"event":"watchers","count":10}"#.to_vec()), "{events:?}");
    assert!(events.contains(&br#"{"event":"keyframe"}"#.to_vec()), "{events:?}");
}

#[test]
fn a_watcher_that_keeps_up_gets_every_message_even_before_a_key_frame() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_watcher("s", 10, now, &mut c);
    hub.add_publisher("s", PUB, now, &mut c);
    for (kind, tag) in [(3, 0), (4, 1), (2, 2), (3, 3)] {
        publish(&mut hub, &mut c, kind, tag, now);
    }
    assert_eq!(c.take(10), vec![NOT_LIVE.to_vec(), LIVE.to_vec(), vec![3, 0], vec![4, 1], vec![2, 2], vec![3, 3]]);
    // A late joiner with nothing cached gets the live deltas too.
    hub.add_watcher("s", 11, now, &mut c);
    hub.remove_publisher("s", PUB, now, &mut c);
    assert!(hub.add_publisher("s", 2, now, &mut c));
    publish(&mut hub, &mut c, 3, 4, now);
    assert_eq!(c.take(11).last(), Some(&vec![3, 4]));
    assert_eq!(hub.stats.messages_dropped, 0);
}

#[test]
fn a_group_past_the_bound_is_not_cached_until_the_next_key_frame() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    let big = |kind: u8, tag: u8| frame::encode(frame::OP_BINARY, &[&[kind, tag][..], &[0; 400]].concat());
    hub.publish("s", 1, 2, msg(1, 0), now, &mut c);
    for (kind, tag) in [(2, 1), (3, 2), (3, 3)] {
        hub.publish("s", kind, 402, big(kind, tag), now, &mut c); // the third passes 1000 bytes
    }
    hub.publish("s", 3, 2, msg(3, 4), now, &mut c);
    hub.add_watcher("s", 10, now, &mut c);
    assert_eq!(c.take(10), vec![LIVE.to_vec(), vec![1, 0]], "only the init: the group outgrew its bound");
    publish(&mut hub, &mut c, 2, 5, now);
    publish(&mut hub, &mut c, 3, 6, now);
    c.take(10);
    hub.add_watcher("s", 11, now, &mut c);
    assert_eq!(c.take(11), vec![LIVE.to_vec(), vec![1, 0], vec![2, 5], vec![3, 6]], "cached again from the key frame");
}

#[test]
fn key_frame_requests_go_out_at_most_once_a_second() {
    let (mut hub, mut c, now) = (Hub::new(POLICY), Fake::default(), Instant::now());
    hub.add_publisher("s", PUB, now, &mut c);
    c.take(PUB);
    let keyframes = |c: &mut Fake| c.take(PUB).iter().filter(|e| e.as_slice() == br#"{"event":"keyframe"}"#).count();
    hub.add_watcher("s", 10, now, &mut c);
    assert_eq!(keyframes(&mut c), 1, "a watcher joined");
    hub.add_watcher("s", 11, now + Duration::from_millis(300), &mut c);
    hub.tick(now + Duration::from_millis(900), &mut c);
    assert_eq!(keyframes(&mut c), 0, "the second join waits out the second");
    hub.tick(now + Duration::from_millis(1000), &mut c);
    assert_eq!(keyframes(&mut c), 1);
    // A watcher over its bound skips a delta and waits for a key frame: that asks for one too.
    hub.add_watcher("s", 12, now + Duration::from_millis(1000), &mut c);
    c.backlog.insert(12, Backlog { bytes: 5000, oldest_wait: Duration::ZERO });
    hub.tick(now + Duration::from_millis(2100), &mut c);
    keyframes(&mut c);
    publish(&mut hub, &mut c, 3, 0, now + Duration::from_millis(3200));
    assert_eq!(keyframes(&mut c), 1, "waiting for a key frame");
    publish(&mut hub, &mut c, 3, 1, now + Duration::from_millis(3500));
    hub.tick(now + Duration::from_millis(3600), &mut c);
    assert_eq!(keyframes(&mut c), 0);
    hub.tick(now + Duration::from_millis(4200), &mut c);
    assert_eq!(keyframes(&mut c), 1, "still waiting, a second later");
}
