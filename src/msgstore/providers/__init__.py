"""Record a provider SDK's stream into msgstore: the types the adapters share.

The adapters are ``msgstore.providers.openai`` (``record_chat_stream``,
``record_response_stream``) and ``msgstore.providers.anthropic``
(``record_message_stream``). This package imports no SDK, and neither does
``import msgstore``: install ``msgstore[openai]`` or ``msgstore[anthropic]`` for the
adapter you use.
"""

from ._recording import IncompleteStream, Recorded, StreamError, UnknownToolCall
from ._usage import Prices, Usage, add_usage_to_session

__all__ = [
    "IncompleteStream",
    "Prices",
    "Recorded",
    "StreamError",
    "UnknownToolCall",
    "Usage",
    "add_usage_to_session",
]
