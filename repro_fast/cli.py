"""`repro-fast` command line: ``repro-fast demo``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="repro-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="score real GSM8K chains of thought with SmolLM2-135M-Instruct")
    demo.add_argument("--problems", type=int, default=3, help="how many GSM8K problems (1-100)")
    demo.add_argument("--segments", type=int, default=20, help="num_segments k")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if not 1 <= args.problems <= 100:
            parser.error(f"--problems: expected 1..100, got {args.problems}")
        if args.segments < 1:
            parser.error(f"--segments: expected >= 1, got {args.segments}")
        from repro_fast.demo import run_demo

        run_demo(num_problems=args.problems, num_segments=args.segments)


if __name__ == "__main__":
    main()
