//! `mod_time`: Entity time (XEP-0202), as ejabberd's `mod_time`: a `get`
//! to the server answers `<tzo>` and `<utc>`. The server reports UTC
//! (`tzo` is `+00:00`, since no time-zone database is linked in, and UTC
//! is what a server in a cluster should agree on); `utc` is the XEP-0082
//! date-time with milliseconds. A `set` is `not-allowed`; a request to an
//! account's bare JID is not the server's to answer
//! (`service-unavailable`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};

use super::{Services, holder_tree};
use super::{iq_error, iq_result, to_account};
use crate::ns;
use crate::stanza_error::StanzaErrorCondition;
use crate::xml::Element;

/// The `mod_time` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

/// Year, month, day of the civil (proleptic Gregorian) calendar for a
/// count of days since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `t` as an XEP-0082 date-time in UTC with milliseconds,
/// e.g. `2006-12-19T17:58:35.000Z`.
pub fn xep0082_utc(t: SystemTime) -> String {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(_) => (0, 0),
    };
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// The `<time xmlns='urn:xmpp:time'/>` of the answer for `now`.
pub fn time_element(now: SystemTime) -> Element {
    Element::builder("time", ns::TIME)
        .append(Element::builder("tzo", ns::TIME).text("+00:00").build())
        .append(
            Element::builder("utc", ns::TIME)
                .text(&xep0082_utc(now))
                .build(),
        )
        .build()
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_time"
    }

    fn start(&self, ctx: &ModuleContext, _opts: &ModuleOptions) -> Result<ChildSpec, String> {
        self.services.iq_handler(
            ctx,
            ns::TIME,
            true,
            Arc::new(|req| {
                Box::pin(async move {
                    if to_account(&req) {
                        return iq_error(&req, StanzaErrorCondition::ServiceUnavailable);
                    }
                    if req.attr("type") != Some("get") {
                        return iq_error(&req, StanzaErrorCondition::NotAllowed);
                    }
                    Some(iq_result(&req, Some(time_element(SystemTime::now()))))
                })
            }),
        );
        Ok(holder_tree(ctx.module(), Arc::new(|_| Ok(()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(xep0082_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // XEP-0202's example instant.
        let t = UNIX_EPOCH + Duration::from_millis(1_166_551_115_000);
        assert_eq!(xep0082_utc(t), "2006-12-19T17:58:35.000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(xep0082_utc(t), "2000-02-29T00:00:00.123Z");
    }
}
