"""Command-line entry of the web app: parse flags, build the Blocks, launch."""

from __future__ import annotations

import argparse

import gradio as gr


def build_app() -> gr.Blocks:
    with gr.Blocks(title="ia3app") as demo:
        gr.Markdown("# ia3app\nAdapt a language model to your task with a handful of examples (T-Few / (IA)³).")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    build_app().launch(server_name=args.host, server_port=args.port)
