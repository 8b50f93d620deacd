"""Storage: run folders, crash-safe BigTIFF stacks, JSON lines, and the frame writer thread.

:mod:`.folder` (``RunFolder``, ``recover``), :mod:`.tiff` (``StackWriter``, safe OME
headers, page counting), :mod:`.direct` (direct I/O past the page cache, aligned staging,
``resolve_io`` for ``storage.io``), :mod:`.jsonl` (``JsonlWriter``, ``read_jsonl``) and
:mod:`.writer` (``FrameWriter``: the bounded queue and the thread that owns the files).
"""

from smartscope.storage.columns import ColumnarWriter, read_columns
from smartscope.storage.direct import IoMode, resolve_io
from smartscope.storage.folder import RunFolder, plane_of_record, recover, sync_tree
from smartscope.storage.jsonl import JsonlWriter, dumps, read_jsonl
from smartscope.storage.ome import PlaneInfo, SeriesScale, channel_color, describe_series, ome_xml
from smartscope.storage.tiff import StackWriter, TiffFormatError, count_pages, write_description
from smartscope.storage.writer import FrameWriter, QueueFull

__all__ = [
    "ColumnarWriter",
    "FrameWriter",
    "IoMode",
    "JsonlWriter",
    "PlaneInfo",
    "QueueFull",
    "RunFolder",
    "SeriesScale",
    "StackWriter",
    "TiffFormatError",
    "channel_color",
    "count_pages",
    "describe_series",
    "dumps",
    "ome_xml",
    "plane_of_record",
    "read_columns",
    "read_jsonl",
    "recover",
    "resolve_io",
    "sync_tree",
    "write_description",
]
