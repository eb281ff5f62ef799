//! Every command's `--help`: no option states its default twice (once in its text and
//! once from clap), and `focal train` groups its flags by configuration section.

mod common;

use common::{focal, succeeds, text};

const COMMANDS: [&[&str]; 12] = [
    &["train"],
    &["eval"],
    &["detect"],
    &["synth"],
    &["cocoeval"],
    &["gradcheck"],
    &["ablate"],
    &["loss-cdf"],
    &["bench", "gemm"],
    &["bench", "conv"],
    &["bench", "train-step"],
    &["bench", "infer"],
];

#[test]
fn no_option_prints_its_default_twice() {
    for command in COMMANDS {
        let mut args = command.to_vec();
        args.push("--help");
        let out = focal(&args);
        succeeds(&out);
        let help = text(&out.stdout);
        for line in help.lines() {
            assert!(
                line.matches("[default").count() <= 1,
                "focal {}: a default printed twice in {line:?}",
                command.join(" ")
            );
        }
    }
}

#[test]
fn train_help_groups_the_flags_by_configuration_section() {
    let out = focal(&["train", "--help"]);
    succeeds(&out);
    let help = text(&out.stdout);
    // Each heading, followed by a flag of that section.
    for (heading, flag) in [
        ("Run:", "--iters"),
        ("Data:", "--min-size"),
        ("Model:", "--backbone"),
        ("Anchors:", "--anchor-sizes"),
        ("Loss:", "--gamma"),
        ("Matching:", "--fg-iou"),
        ("Inference:", "--nms-iou"),
        ("Optimisation:", "--lr"),
        ("Schedule:", "--warmup-iters"),
    ] {
        let at = help
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("no {heading} section in:\n{help}"));
        let section = &help[at + 1..];
        let end = section.find("\n\n").unwrap_or(section.len());
        assert!(
            section[..end].contains(flag),
            "{flag} is not under {heading}:\n{help}"
        );
    }
}

/// The defaults `focal train --help` names are the presets' own: the synthetic run's
/// length is read from `SHAPES_ITERS`, so the help cannot fall behind a retune.
#[test]
fn train_help_names_the_synthetic_runs_length() {
    let out = focal(&["train", "--help"]);
    succeeds(&out);
    let help = text(&out.stdout);
    let want = format!(
        "[synthetic default: {}]",
        focal_retinanet::train::config::SHAPES_ITERS
    );
    let line = help
        .lines()
        .find(|l| l.contains("--iters"))
        .unwrap_or_else(|| panic!("no --iters in:\n{help}"));
    assert!(line.contains(&want), "{line:?} lacks {want:?}");
}
