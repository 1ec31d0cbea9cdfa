"""Start the ia3app web app (Gradio) on http://127.0.0.1:7860."""

from ui.main import main

if __name__ == "__main__":
    main()
