"""The Modbus register map of ``station bridge modbus`` (documented in docs/BRIDGES.md).

Coils: 0 trigger (rising edge), 1 result ack (rising edge).  Holding registers: 0 heartbeat
counter, 1 status bits, 2 result ``seq`` (low 16 bits), 3 number of defective cells, 4–11
defective cell codes, 100–115 the next part's id (ASCII, 2 characters per register, high byte
first).  Input registers 0–11 mirror holding registers 0–11 for PLCs that prefer function 4.
"""

from __future__ import annotations

from typing import Any

from station.bridges.link import PartResult

COIL_TRIGGER = 0
COIL_ACK = 1
N_COILS = 2

HR_HEARTBEAT = 0
HR_STATUS = 1
HR_SEQ = 2
HR_N_DEFECTS = 3
HR_CELLS = 4
N_CELL_CODES = 8
HR_PART_ID = 100
N_PART_ID = 16
N_REGISTERS = HR_PART_ID + N_PART_ID  # 0..115

BIT_READY = 1 << 0
BIT_VALID = 1 << 1
BIT_PASS = 1 << 2
BIT_DEFECT = 1 << 3
BIT_ERROR = 1 << 4
BIT_REFUSED = 1 << 5

UNKNOWN_CELL = 0xFFFF  # a defect whose cell the bridge cannot code
PIN_ROWS = {"U": 1, "C": 2, "D": 3}


class PartIdError(ValueError):
    """The part id registers hold something that is not a printable ASCII string."""


def part_id_from_registers(regs: list[int]) -> str | None:
    """The ASCII string in the part id registers (2 characters per register, high byte first,
    ended by a NUL or the last register; surrounding spaces dropped); ``None`` when empty."""
    raw = bytearray()
    for r in regs:
        raw += bytes(((r >> 8) & 0xFF, r & 0xFF))
    raw = raw.split(b"\0", 1)[0]
    text = raw.strip(b" ")
    if not text:
        return None
    if any(c < 0x21 or c > 0x7E for c in text if c != 0x20):
        raise PartIdError(f"part id registers hold non-printable bytes {bytes(text)!r}")
    return text.decode("ascii")


def part_id_to_registers(part_id: str) -> list[int]:
    """``part_id`` as the PLC writes it into holding registers 100–115 (at most 32 ASCII
    characters, NUL padded)."""
    raw = part_id.encode("ascii")
    if len(raw) > 2 * N_PART_ID:
        raise ValueError(f"part id {part_id!r} is longer than {2 * N_PART_ID} characters")
    raw = raw.ljust(2 * N_PART_ID, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def cell_code(defect: dict[str, Any], cells: list[str] | None) -> int:
    """A defective cell as one register: ``column × 10 + row`` (U=1, C=2, D=3) on the 9×3 pin
    grid (``X:3, Y:C`` → 32); on any other grid the cell's 1-based index in the result's cell
    list (row by row, as the recipe's grid orders them); :data:`UNKNOWN_CELL` when neither."""
    col, row = str(defect.get("column", "")), str(defect.get("row", ""))
    if col.isdigit() and 1 <= int(col) <= 9 and row in PIN_ROWS:
        return int(col) * 10 + PIN_ROWS[row]
    address = defect.get("address")
    if cells and address in cells:
        return cells.index(address) + 1
    return UNKNOWN_CELL


def grid_cells(event: dict[str, Any] | None) -> list[str] | None:
    """The grid's cell addresses in order, from the metric judge's per-cell scores."""
    judges = (event or {}).get("judges")
    metric = judges.get("metric") if isinstance(judges, dict) else None
    cells = metric.get("cells") if isinstance(metric, dict) else None
    return list(cells) if isinstance(cells, dict) else None


def result_registers(result: PartResult) -> list[int]:
    """Holding registers 1–11 for a part's result (result valid set; ready added by the
    caller): status bits, ``seq`` low 16 bits, defect count, up to 8 cell codes."""
    bits = BIT_VALID
    if result.accepted:
        bits |= BIT_PASS
    elif result.verdict == "defect":
        bits |= BIT_DEFECT
    else:
        bits |= BIT_ERROR
    if result.refused:
        bits |= BIT_REFUSED
    cells = grid_cells(result.event)
    codes = [cell_code(d, cells) for d in result.defects][:N_CELL_CODES]
    codes += [0] * (N_CELL_CODES - len(codes))
    seq = (result.seq or 0) & 0xFFFF
    return [bits, seq, min(len(result.defects), 0xFFFF), *codes]
