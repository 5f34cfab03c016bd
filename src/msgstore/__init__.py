"""msgstore: a Trio message store for streaming LLM output, compatible with crush's files."""

from ._broker import Broker, Event, EventType, Subscription, iter_batches, open_broker
from ._codec import decode_parts, encode_parts
from ._content import (
    BinaryContent,
    Finish,
    FinishReason,
    ImageURLContent,
    Message,
    Part,
    ReasoningContent,
    Role,
    ShellCommand,
    TextContent,
    ToolCall,
    ToolResult,
)
from ._errors import (
    ActorFailed,
    CorruptRecord,
    DatabaseBusy,
    DatabaseError,
    InvalidPart,
    InvalidUpdate,
    MessageNotFound,
    MsgstoreError,
    NotFound,
    ReloadRequired,
    ServiceClosed,
    SessionNotFound,
    StorageError,
    UnwrittenMessages,
)
from ._repair import repair
from ._repair_report import RepairReport
from ._service import MessageService, open_message_service, run_message_service
from ._sessions import SessionService
from ._statistics import ServiceStatistics
from ._storage import Database, Session, connect
from ._supervisor import RestartPolicy

__all__ = [
    "ActorFailed",
    "BinaryContent",
    "Broker",
    "CorruptRecord",
    "Database",
    "DatabaseBusy",
    "DatabaseError",
    "Event",
    "EventType",
    "Finish",
    "FinishReason",
    "ImageURLContent",
    "InvalidPart",
    "InvalidUpdate",
    "Message",
    "MessageNotFound",
    "MessageService",
    "MsgstoreError",
    "NotFound",
    "Part",
    "ReasoningContent",
    "ReloadRequired",
    "RepairReport",
    "RestartPolicy",
    "Role",
    "ServiceClosed",
    "ServiceStatistics",
    "Session",
    "SessionNotFound",
    "SessionService",
    "ShellCommand",
    "StorageError",
    "Subscription",
    "TextContent",
    "ToolCall",
    "ToolResult",
    "UnwrittenMessages",
    "connect",
    "decode_parts",
    "encode_parts",
    "iter_batches",
    "open_broker",
    "open_message_service",
    "repair",
    "run_message_service",
]
