"""Using a trained model: load an export or bundle, chat with it (above the model library: files, decoding, chat
templates live here, not in ``anymal_lit.models``)."""

from anymal_lit.inference.chat import chat, conversation_batch, generate_batch
from anymal_lit.inference.loading import load_model
from anymal_lit.inference.messages import MessageError

__all__ = ["MessageError", "chat", "conversation_batch", "generate_batch", "load_model"]
