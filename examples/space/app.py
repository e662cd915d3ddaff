"""BA-SAM demo as a Hugging Face Space (Gradio SDK): this folder is the Space, and this file its entry point.

Locally, from the repository root: `pip install -e ".[demo]"`, then `python examples/space/app.py` (the same page as
`basam-hf demo`). The model is the environment variable BASAM_MODEL (a Hub repo id or a folder; on a Space, set it
under Settings > Variables), by default the BA-SAM model embedded in the package, so the Space needs no download.
BASAM_DTYPE (`float32`, `bfloat16` or `float16`; default the model's own) is the dtype it runs in: see "Low
precision" in the package README for when bfloat16 pays off on a CPU.
"""

import os

from basam_hf.app import DEFAULT_MAX_FILE_SIZE, build_demo

demo = build_demo(os.environ.get("BASAM_MODEL", "default"), dtype=os.environ.get("BASAM_DTYPE") or None)

if __name__ == "__main__":
    # A Space sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; locally this serves http://127.0.0.1:7860.
    demo.launch(show_error=True, max_file_size=DEFAULT_MAX_FILE_SIZE)
