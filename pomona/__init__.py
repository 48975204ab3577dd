"""pomona: apple instance segmentation trained only on synthetic, automatically labelled orchards."""

from pomona.offline import configure_environment

__version__ = "0.1.0"

configure_environment()  # before anything imports ultralytics, gradio or huggingface_hub

from pomona.errors import PomonaError  # noqa: E402
from pomona.instances import Instances  # noqa: E402

__all__ = ["Instances", "PomonaError", "__version__"]
