//! The login throttle's waits, as a connection meets them: told to a client that asks
//! (`delayed`, before the wait), waited out unless the server stops, and refused at once
//! (`throttled`) when the throttle has no time within `--login-delay-max`. The throttle itself
//! (who waits how long) is [`crate::login_throttle`]; this module only waits and says so.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::future::FutureExt;
use futures::select;

use super::super::context::{shutdown_notice, Context};
use super::for_log;
use crate::connection::{AuthAction, Disconnect};
use crate::login_throttle::{Booked, DelayedBy, Full};
use crate::outbox::Outbox;
use crate::protocol::{DelayReason, ErrorCode, ServerMessage};
use crate::runtime;

/// A wait the login throttle imposes, and whether the client asked to be told of it.
pub(super) struct Delay {
    pub(super) wait: Duration,
    pub(super) reason: DelayReason,
    pub(super) tell: bool,
}

/// The server stopped during a wait.
pub(super) struct Stopped;

/// Waits out a throttle's delay, having told the client (`delayed`) first when it asked to be
/// told, so that a person waiting for an answer knows why. `Err` when the server stops meanwhile
/// (the caller says `shutdown`).
pub(super) async fn hold_back(
    delay: Delay,
    shared: &Context,
    outbox: &mut Outbox,
) -> Result<(), Stopped> {
    if delay.tell {
        // Tenths of a second, rounded up: the answer never comes before the time told.
        let seconds = (delay.wait.as_secs_f64() * 10.0).ceil() / 10.0;
        let _ = outbox.push(&ServerMessage::Delayed {
            seconds,
            reason: delay.reason,
        });
    }
    select! {
        _ = runtime::sleep(delay.wait).fuse() => Ok(()),
        _ = shared.stop.clone().fuse() => Err(Stopped),
    }
}

/// Waits until the login throttle lets this attempt be checked (at once, unless the account or
/// the address has failed recently), and returns how long it waited and the booking to settle
/// with the outcome. A client that asked (`tell_delays`) is told the wait and why. An attempt
/// whose time is more than `--login-delay-max` away (other attempts hold the account's or the
/// address's nearer times) is refused at once with `throttled` and the seconds to wait.
pub(super) async fn wait_for_login_slot<'a>(
    remote: SocketAddr,
    ip: IpAddr,
    username: &str,
    tell_delays: bool,
    shared: &'a Context,
    outbox: &mut Outbox,
) -> Result<(Duration, Booked<'a>), Disconnect> {
    let now = Instant::now();
    let booked = match shared.throttle.book(username, ip, now) {
        Ok(booked) => booked,
        Err(full) => return Err(refuse_throttled(remote, username, full, outbox)),
    };
    let wait = booked.at.saturating_duration_since(now);
    if wait.is_zero() {
        return Ok((wait, booked));
    }
    log::info!(
        "{remote}: login as {} delayed after {} recent failures ({:.1} s)",
        for_log(username),
        booked.failures,
        wait.as_secs_f64()
    );
    let delay = Delay {
        wait,
        reason: delay_reason(booked.by),
        tell: tell_delays,
    };
    match hold_back(delay, shared, outbox).await {
        Ok(()) => Ok((wait, booked)),
        Err(Stopped) => {
            let _ = outbox.push(&shutdown_notice());
            Err(Disconnect::ServerShuttingDown)
        }
    }
}

pub(super) fn delay_reason(by: DelayedBy) -> DelayReason {
    match by {
        DelayedBy::Account => DelayReason::Account,
        DelayedBy::Address => DelayReason::Address,
    }
}

/// Refuses a login the throttle has no time for within `--login-delay-max`: `throttled`, with
/// the seconds until the next free time (rounded up: trying again sooner is refused again).
pub(super) fn refuse_throttled(
    remote: SocketAddr,
    username: &str,
    full: Full,
    outbox: &mut Outbox,
) -> Disconnect {
    let seconds = full.wait.as_secs_f64().ceil();
    let (whose, clock) = match full.by {
        DelayedBy::Account => ("this account", "account"),
        DelayedBy::Address => ("your address", "address"),
    };
    log::warn!(
        "{remote}: login as {} refused: {} (the {clock}'s next free time is in {seconds} s)",
        for_log(username),
        ErrorCode::Throttled
    );
    let _ = outbox.push(&ServerMessage::error(
        ErrorCode::Throttled,
        format!(
            "too many recent login attempts on {whose}: nothing was checked; try again in {seconds} s"
        ),
    ));
    Disconnect::Refused {
        action: AuthAction::Login,
        code: ErrorCode::Throttled,
    }
}

/// Lets a registration from `ip` go ahead within its address's hourly quota (refused with
/// `registration_limit` beyond it), once the login throttle's slot for the address has come:
/// the address's recent failures and registrations space its registrations out.
pub(super) async fn wait_for_registration_slot(
    remote: SocketAddr,
    ip: IpAddr,
    tell_delays: bool,
    shared: &Context,
    outbox: &mut Outbox,
) -> Result<Duration, Disconnect> {
    let now = Instant::now();
    if let Err(reached) = shared.registrations.take(ip, now) {
        log::warn!("{remote}: registration refused: {reached}");
        let _ = outbox.push(&ServerMessage::error(
            ErrorCode::RegistrationLimit,
            format!(
                "your address has registered {} accounts within the hour, the most allowed (--register-per-ip-hour); try again in {} min, or log in to an account you have",
                reached.per_hour,
                reached.next_in.as_secs().div_ceil(60)
            ),
        ));
        return Err(Disconnect::Refused {
            action: AuthAction::Registration,
            code: ErrorCode::RegistrationLimit,
        });
    }
    let (slot, count) = shared.throttle.book_registration(ip, now);
    let wait = slot.saturating_duration_since(now);
    if wait.is_zero() {
        return Ok(wait);
    }
    log::info!(
        "{remote}: registration delayed after {count} recent failures and registrations from the address ({:.1} s)",
        wait.as_secs_f64()
    );
    let delay = Delay {
        wait,
        reason: DelayReason::Address,
        tell: tell_delays,
    };
    match hold_back(delay, shared, outbox).await {
        Ok(()) => Ok(wait),
        Err(Stopped) => {
            shared.registrations.give_back(ip, Instant::now());
            let _ = outbox.push(&shutdown_notice());
            Err(Disconnect::ServerShuttingDown)
        }
    }
}
