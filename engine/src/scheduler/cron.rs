//! A job's `[schedule]` compiled: the cron expression in its time zone,
//! the window its tide must finish in, and which missed fire times a
//! restarted service catches up on.
//!
//! Fire times are computed in the schedule's zone and handed out in UTC, so
//! DST is handled once, here: a fire time that falls into a spring-forward
//! gap runs at the first valid minute after the gap; one that falls into a
//! fall-back overlap runs once, at its first occurrence (croner's OCPS
//! rules).

use crate::spec::{CatchUp, Priority, ScheduleSection};
use chrono::{DateTime, Duration, LocalResult, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;

/// Most missed fire times `catch_up = "all"` replays after a long outage.
pub const MAX_CATCH_UP: usize = 100;

/// How late a fire time may be noticed and still count as on time rather
/// than missed (the service polls about once a second).
pub const ON_TIME_GRACE_SECS: i64 = 60;

/// A daily window `HH:MM-HH:MM` in the schedule's zone; it may cross
/// midnight (`22:00-04:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Local start time.
    pub start: NaiveTime,
    /// Local end time.
    pub end: NaiveTime,
}

impl FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("expected a window \"HH:MM-HH:MM\" such as \"02:00-06:00\", found {s:?}");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let t = |x: &str| NaiveTime::parse_from_str(x.trim(), "%H:%M").map_err(|_| bad());
        let (start, end) = (t(a)?, t(b)?);
        if start == end {
            return Err(format!(
                "window {s:?} is empty: start and end are the same time"
            ));
        }
        Ok(Window { start, end })
    }
}

/// A compiled `[schedule]`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The cron expression as written, when the job recurs.
    pub expr: Option<String>,
    cron: Option<Cron>,
    /// Zone the expression and window are read in.
    pub tz: Tz,
    /// The window a tide must finish inside.
    pub window: Option<Window>,
    /// Admission priority.
    pub priority: Priority,
    /// What to do with fire times missed while the service was down.
    pub catch_up: CatchUp,
}

/// The machine's IANA zone: `TZ`, else the `/etc/localtime` link, else UTC.
pub fn machine_zone() -> Tz {
    let from_env = std::env::var("TZ")
        .ok()
        .map(|z| z.trim_start_matches(':').to_string());
    let from_link = || {
        std::fs::read_link("/etc/localtime").ok().and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
        })
    };
    from_env
        .and_then(|z| z.parse().ok())
        .or_else(|| from_link().and_then(|z| z.parse().ok()))
        .unwrap_or(Tz::UTC)
}

impl Schedule {
    /// Compiles a `[schedule]` section. An error names the field at fault
    /// (`cron`, `timezone`, `window`) and what is expected.
    pub fn compile(s: &ScheduleSection) -> Result<Schedule, (&'static str, String)> {
        let cron = match &s.cron {
            Some(expr) => Some(Cron::from_str(expr).map_err(|e| {
                (
                    "cron",
                    format!(
                        "invalid cron expression {expr:?}: {e}; expected five fields \
                         (minute hour day-of-month month day-of-week) such as \"0 2 * * *\""
                    ),
                )
            })?),
            None => None,
        };
        let tz = match &s.timezone {
            Some(z) => z.parse::<Tz>().map_err(|_| {
                (
                    "timezone",
                    format!("unknown time zone {z:?}; expected an IANA name such as \"Asia/Shanghai\" or \"UTC\""),
                )
            })?,
            None => machine_zone(),
        };
        let window = match &s.window {
            Some(w) => Some(w.parse::<Window>().map_err(|e| ("window", e))?),
            None => None,
        };
        if window.is_some() && cron.is_none() {
            return Err((
                "window",
                "a window needs a `cron` expression: it bounds the scheduled runs".into(),
            ));
        }
        Ok(Schedule {
            expr: s.cron.clone(),
            cron,
            tz,
            window,
            priority: s.priority,
            catch_up: s.catch_up,
        })
    }

    /// True when the job recurs on a cron expression.
    pub fn recurring(&self) -> bool {
        self.cron.is_some()
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = self.cron.as_ref()?;
        let local = t.with_timezone(&self.tz);
        cron.find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Fire times in `(after, upto]`, oldest first, at most `limit`
    /// (the newest `limit` when there are more).
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = std::collections::VecDeque::new();
        let mut t = after;
        while let Some(n) = self.next_after(t) {
            if n > upto {
                break;
            }
            out.push_back(n);
            if out.len() > limit {
                out.pop_front();
            }
            t = n;
        }
        out.into()
    }

    /// The fire times to run now, given the last fire time the service
    /// handled and the current time, applying `catch_up` to those missed
    /// (noticed more than [`ON_TIME_GRACE_SECS`] late).
    pub fn due(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let fires = self.fires_between(last, now, MAX_CATCH_UP);
        let grace = Duration::seconds(ON_TIME_GRACE_SECS);
        let (missed, on_time): (Vec<_>, Vec<_>) = fires.into_iter().partition(|f| now - *f > grace);
        let mut due = match self.catch_up {
            CatchUp::All => missed,
            CatchUp::Latest => missed.last().copied().into_iter().collect(),
            CatchUp::None => Vec::new(),
        };
        // A run missed and one on time are the same tide: run it once.
        if self.catch_up == CatchUp::Latest && !on_time.is_empty() {
            due.clear();
        }
        due.extend(on_time);
        due
    }

    /// The deadline of the run fired at `fire`: the first end of the
    /// window at or after the fire time, in the schedule's zone.
    pub fn deadline(&self, fire: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let w = self.window?;
        let local = fire.with_timezone(&self.tz);
        let mut day = local.date_naive();
        for _ in 0..3 {
            let end = self.resolve(day.and_time(w.end));
            if end >= fire {
                return Some(end);
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The start of the window the run fired at `fire` belongs to.
    pub fn window_start(&self, fire: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let w = self.window?;
        let end = self.deadline(fire)?;
        let end_local = end.with_timezone(&self.tz);
        let mut day = end_local.date_naive();
        if w.start > w.end {
            day = day.pred_opt()?;
        }
        Some(self.resolve(day.and_time(w.start)))
    }

    /// A local wall time as UTC: the earlier of two in an overlap, the
    /// first valid minute after a gap.
    fn resolve(&self, local: chrono::NaiveDateTime) -> DateTime<Utc> {
        let mut t = local;
        for _ in 0..(4 * 60) {
            match self.tz.from_local_datetime(&t) {
                LocalResult::Single(d) => return d.with_timezone(&Utc),
                LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
                LocalResult::None => t += Duration::minutes(1),
            }
        }
        Utc.from_utc_datetime(&local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(cron: &str, tz: &str, window: Option<&str>, catch_up: CatchUp) -> Schedule {
        Schedule::compile(&ScheduleSection {
            cron: Some(cron.into()),
            timezone: Some(tz.into()),
            window: window.map(Into::into),
            priority: Priority::Normal,
            catch_up,
        })
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn nightly_fire_in_a_fixed_offset_zone() {
        let s = sched(
            "0 2 * * *",
            "Asia/Shanghai",
            Some("02:00-06:00"),
            CatchUp::Latest,
        );
        let next = s.next_after(utc("2026-11-21T12:00:00Z")).unwrap();
        // 02:00 in Shanghai is 18:00 UTC the day before.
        assert_eq!(next, utc("2026-11-21T18:00:00Z"));
        assert_eq!(s.deadline(next), Some(utc("2026-11-21T22:00:00Z")));
        assert_eq!(s.window_start(next), Some(next));
    }

    #[test]
    fn dst_spring_forward_gap_runs_once_after_the_gap() {
        // 2026-03-08: New York skips 02:00-03:00.
        let s = sched("30 2 * * *", "America/New_York", None, CatchUp::Latest);
        let fires = s.fires_between(utc("2026-03-07T00:00:00Z"), utc("2026-03-10T00:00:00Z"), 10);
        assert_eq!(
            fires,
            vec![
                utc("2026-03-07T07:30:00Z"), // 02:30 EST
                utc("2026-03-08T07:00:00Z"), // gap: 03:00 EDT
                utc("2026-03-09T06:30:00Z"), // 02:30 EDT
            ]
        );
    }

    #[test]
    fn dst_fall_back_overlap_runs_once() {
        // 2026-11-01: New York repeats 01:00-02:00.
        let s = sched("30 1 * * *", "America/New_York", None, CatchUp::Latest);
        let fires = s.fires_between(utc("2026-10-31T12:00:00Z"), utc("2026-11-02T12:00:00Z"), 10);
        assert_eq!(
            fires,
            vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
        );
    }

    #[test]
    fn window_crossing_midnight_and_dst() {
        let s = sched(
            "0 22 * * *",
            "Europe/Berlin",
            Some("22:00-04:00"),
            CatchUp::Latest,
        );
        // 2026-03-28 22:00 CET; the window ends 04:00 CEST after the change.
        let fire = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(fire, utc("2026-03-28T21:00:00Z"));
        assert_eq!(s.deadline(fire), Some(utc("2026-03-29T02:00:00Z")));
        assert_eq!(s.window_start(fire), Some(fire));
    }

    #[test]
    fn catch_up_policies_after_downtime() {
        let last = utc("2026-11-18T03:00:00Z");
        let now = utc("2026-11-21T02:00:30Z");
        let all = sched("0 2 * * *", "UTC", None, CatchUp::All).due(last, now);
        assert_eq!(
            all,
            vec![
                utc("2026-11-19T02:00:00Z"),
                utc("2026-11-20T02:00:00Z"),
                utc("2026-11-21T02:00:00Z")
            ]
        );
        let latest = sched("0 2 * * *", "UTC", None, CatchUp::Latest);
        // Today's fire is on time: it is the catch-up too.
        assert_eq!(latest.due(last, now), vec![utc("2026-11-21T02:00:00Z")]);
        let later = utc("2026-11-21T09:00:00Z");
        assert_eq!(latest.due(last, later), vec![utc("2026-11-21T02:00:00Z")]);
        let none = sched("0 2 * * *", "UTC", None, CatchUp::None);
        assert!(none.due(last, later).is_empty());
        assert_eq!(none.due(last, now), vec![utc("2026-11-21T02:00:00Z")]);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut sec = ScheduleSection {
            cron: Some("61 2 * * *".into()),
            timezone: None,
            window: None,
            priority: Priority::Normal,
            catch_up: CatchUp::Latest,
        };
        assert_eq!(Schedule::compile(&sec).unwrap_err().0, "cron");
        sec.cron = Some("0 2 * * *".into());
        sec.timezone = Some("Mars/Olympus".into());
        assert_eq!(Schedule::compile(&sec).unwrap_err().0, "timezone");
        sec.timezone = None;
        sec.window = Some("2-6".into());
        assert_eq!(Schedule::compile(&sec).unwrap_err().0, "window");
    }
}
