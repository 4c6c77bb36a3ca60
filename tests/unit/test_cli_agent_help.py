"""`beacon agent --help` documents every flag (a newcomer reads it before anything else)."""

from beacon.cli.agent import build_parser


def test_every_agent_flag_has_help_text() -> None:
    parser = build_parser()
    undocumented = [a.option_strings[0] for a in parser._actions
                    if a.option_strings and a.dest != "help" and not (a.help or "").strip()]
    assert undocumented == []
    text = parser.format_help()
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in text
