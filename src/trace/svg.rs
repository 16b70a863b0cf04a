//! The sequence diagram as an SVG picture, for the report's PDF: one lifeline per host, one
//! arrow per packet, in time order, each row with its number and time on the left and its label
//! just above its arrow, starting where the arrow starts.
//!
//! Sized for print: the picture is as wide as the report's text (A4 less its margins) in SVG
//! units, and the report scales it to that width, so one unit is one point and the labels print
//! at `FONT` points. The lanes share that width; only a label too long for the whole row widens
//! the picture (and so shrinks it on the page).
//!
//! Written by hand, not by a diagram tool: a picture rendered from the analyser's own output
//! needs nothing installed (no Mermaid and its Chromium, no PlantUML and its Java), and the
//! report's renderer (WeasyPrint) draws SVG itself. Text is real text, so it can be searched and
//! extracted from the PDF.

use super::diagram::Diagram;

/// Layout, in SVG user units: points, once the report scales the picture to its text width.
const MARGIN: f64 = 4.0;
/// The report's text width: A4's 210 mm less 2 × 13 mm of margin (docs/report/report.html's
/// `@page`), in points.
const PRINT_WIDTH: f64 = 521.0;
/// The number and time column on the left (" 36 +0.373 s").
const TIME_COLUMN: f64 = 54.0;
/// The narrowest a host's lane gets (its name and address fit in it).
const MIN_LANE: f64 = 60.0;
/// Height of one arrow's row: its label above it, then the arrow.
const ROW: f64 = 17.0;
/// How far above its arrow a label's baseline sits.
const LABEL_RISE: f64 = 3.0;
/// Height of the hosts' header.
const HEADER: f64 = 30.0;
/// Font size of labels (7.5 pt in print, over the course's 7 pt floor), and the advance of one
/// character of the monospace font (DejaVu Sans Mono: 0.602 em).
const FONT: f64 = 7.5;
const CHAR_WIDTH: f64 = FONT * 0.602;

/// Arrow colours by what the packet is, so that the DNS, ARP, TCP and UDP phases stand out.
fn colour(protocol: &str, is_dns: bool) -> &'static str {
    match (protocol, is_dns) {
        (_, true) => "#7b3294",
        ("ARP", _) => "#808080",
        ("UDP", _) => "#1f6fb4",
        _ => "#222222",
    }
}

/// The diagram as a standalone SVG document.
pub fn render(diagram: &Diagram) -> String {
    let lanes = diagram.participants.len().max(1) as f64;
    let label_width = |text: &str| text.chars().count() as f64 * CHAR_WIDTH;
    let labels: Vec<String> = diagram
        .steps
        .iter()
        .map(|s| format!("{} {}", s.protocol, s.label))
        .collect();
    let longest = labels.iter().map(|l| label_width(l)).fold(0.0, f64::max);
    // The lanes fill the print width; a label longer than the lanes together widens the picture.
    let lanes_width = (PRINT_WIDTH - 2.0 * MARGIN - TIME_COLUMN)
        .max(MIN_LANE * lanes)
        .max(longest + 4.0);
    let lane = lanes_width / lanes;
    let lanes_left = MARGIN + TIME_COLUMN;
    let right = lanes_left + lanes_width;
    let width = right + MARGIN;
    let lane_x = |i: usize| lanes_left + lane * (i as f64 + 0.5);
    let note_rows = if diagram.omitted > 0 { 1.5 } else { 0.5 };
    let bottom = MARGIN + HEADER + ROW * (diagram.steps.len() as f64 + note_rows);
    let height = bottom + MARGIN;

    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.1} {height:.1}\" \
         width=\"{width:.1}\" height=\"{height:.1}\" font-family=\"DejaVu Sans Mono, monospace\" \
         font-size=\"{FONT}\">\n<title>Sequence diagram: {} packets between {} hosts</title>\n",
        diagram.steps.len(),
        diagram.participants.len()
    );
    out.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    for (i, p) in diagram.participants.iter().enumerate() {
        let x = lane_x(i);
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{MARGIN:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"#eef2f7\" stroke=\"#555\" stroke-width=\"0.6\"/>\n",
            x - MIN_LANE / 2.0 + 3.0,
            MIN_LANE - 6.0,
            HEADER - 6.0
        ));
        out.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
            MARGIN + 10.0,
            escape(&diagram.participant_title(i))
        ));
        out.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            MARGIN + 19.0,
            p.ip
        ));
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#999\" stroke-width=\"0.5\" stroke-dasharray=\"2,2\"/>\n",
            MARGIN + HEADER - 6.0
        ));
    }
    for (row, (step, label)) in diagram.steps.iter().zip(&labels).enumerate() {
        let y = MARGIN + HEADER + ROW * (row as f64 + 1.0);
        let ink = colour(&step.protocol, step.dns.is_some());
        out.push_str(&format!(
            "<text x=\"{MARGIN:.1}\" y=\"{:.1}\" fill=\"#444\">{:>3} +{:.3} s</text>\n",
            y + 2.5,
            step.number,
            step.time
        ));
        let (a, b) = (lane_x(step.from), lane_x(step.to));
        if step.from == step.to {
            out.push_str(&format!(
                "<circle cx=\"{a:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"{ink}\"/>\n"
            ));
        } else {
            let tip = if b > a { b - 1.0 } else { b + 1.0 };
            let back = if b > a { -4.0 } else { 4.0 };
            out.push_str(&format!(
                "<line x1=\"{a:.1}\" y1=\"{y:.1}\" x2=\"{tip:.1}\" y2=\"{y:.1}\" stroke=\"{ink}\" stroke-width=\"0.9\"/>\n\
                 <polygon points=\"{tip:.1},{y:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{ink}\"/>\n",
                tip + back,
                y - 2.2,
                tip + back,
                y + 2.2
            ));
        }
        // Above the arrow, from its left end; moved left as far as it must to end inside the
        // picture. A white band under it keeps the lifelines it crosses from striking it through.
        let w = label_width(label);
        let x = (a.min(b) + 3.0).min(right - w).max(lanes_left);
        let baseline = y - LABEL_RISE;
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"white\" fill-opacity=\"0.85\"/>\n\
             <text x=\"{x:.1}\" y=\"{baseline:.1}\" fill=\"{ink}\">{}</text>\n",
            x - 1.0,
            baseline - FONT * 0.8,
            w + 2.0,
            FONT,
            escape(label)
        ));
    }
    if diagram.omitted > 0 {
        out.push_str(&format!(
            "<text x=\"{MARGIN:.1}\" y=\"{:.1}\" fill=\"#666\">{} packet(s) not between two hosts (multicast, broadcast, non-IP) not shown</text>\n",
            bottom - 2.0,
            diagram.omitted
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Text for an SVG element: the five characters XML reserves, escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::diagram::{Participant, Step};

    #[test]
    fn every_arrow_and_host_is_drawn_and_text_is_escaped() {
        let diagram = Diagram {
            participants: vec![
                Participant {
                    ip: "10.20.30.11".parse().unwrap(),
                    name: Some("client1".into()),
                },
                Participant {
                    ip: "10.20.30.3".parse().unwrap(),
                    name: Some("<webserver>".into()),
                },
            ],
            steps: vec![Step {
                number: 1,
                packet: 1,
                seen: Vec::new(),
                time: 0.4125,
                from: 1,
                to: 0,
                protocol: "TCP".into(),
                label: "a & b".into(),
                messages: Vec::new(),
                tls: Vec::new(),
                sealed: None,
                dns: None,
            }],
            omitted: 1,
        };
        let svg = render(&diagram);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("&lt;webserver&gt;") && svg.contains("TCP a &amp; b"));
        assert!(
            svg.contains("+0.412 s") || svg.contains("+0.413 s"),
            "{svg}"
        );
        assert_eq!(svg.matches("<polygon").count(), 1);
        assert!(svg.contains("1 packet(s) not between two hosts"));
    }

    /// A host with its address as its name.
    fn host(ip: &str) -> Participant {
        Participant {
            ip: ip.parse().unwrap(),
            name: None,
        }
    }

    fn arrow(number: usize, from: usize, to: usize, label: &str) -> Step {
        Step {
            number,
            packet: number,
            seen: Vec::new(),
            time: 0.0,
            from,
            to,
            protocol: "TCP".into(),
            label: label.into(),
            messages: Vec::new(),
            tls: Vec::new(),
            sealed: None,
            dns: None,
        }
    }

    /// The value of attribute `name` in the first element of `svg` that contains `marker`.
    fn attribute(svg: &str, marker: &str, name: &str) -> f64 {
        let element = svg
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no element with {marker}: {svg}"));
        let start = element.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let end = start + element[start..].find('"').unwrap();
        element[start..end].parse().unwrap()
    }

    #[test]
    fn labels_print_at_seven_points_or_more_just_above_their_arrows() {
        let hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
        let diagram = Diagram {
            participants: hosts.iter().map(|ip| host(ip)).collect(),
            steps: vec![
                arrow(1, 0, 1, "first hop"),
                arrow(2, 4, 2, "from the right"),
                arrow(3, 2, 4, &format!("long {}", "x".repeat(80))),
            ],
            omitted: 0,
        };
        let svg = render(&diagram);
        // As wide as the report's text: at the report's 100 % one unit is one point.
        assert_eq!(attribute(&svg, "<svg", "width"), PRINT_WIDTH);
        assert!(attribute(&svg, "<svg", "font-size") >= 7.0);
        let lane = |i: usize| attribute(&svg, &format!(">{}</text>", hosts[i]), "x");
        for (n, (label, from, to)) in [("TCP first hop", 0, 1), ("TCP from the right", 4, 2)]
            .into_iter()
            .enumerate()
        {
            let (left, right) = (lane(from).min(lane(to)), lane(from).max(lane(to)));
            let x = attribute(&svg, &format!(">{label}</text>"), "x");
            assert!(
                left < x && x < right,
                "{label}: x {x} not over its arrow {left}..{right}"
            );
            let arrow_y = MARGIN + HEADER + ROW * (n as f64 + 1.0);
            let y = attribute(&svg, &format!(">{label}</text>"), "y");
            assert!(
                y < arrow_y && arrow_y - y < ROW / 2.0,
                "{label}: y {y}, its arrow at {arrow_y}"
            );
        }
        // A label too long to start at its arrow ends at the picture's edge instead.
        let long = attribute(&svg, ">TCP long x", "x");
        let chars = "TCP long ".len() + 80;
        assert!(long < lane(2), "{long}");
        assert!(long + chars as f64 * CHAR_WIDTH <= PRINT_WIDTH - MARGIN + 0.1);
    }
}
