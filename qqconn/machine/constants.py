"""Constants of the machine: bounds it applies, and event sets it asks about."""

from __future__ import annotations

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.endings import Delay
from qqconn.events import Timer

_INBOUND = (
    ev.HelloReceived,
    ev.ReadyReceived,
    ev.ResumedReceived,
    ev.HeartbeatAcked,
    ev.HeartbeatRequested,
    ev.ReconnectRequested,
    ev.InvalidSessionReceived,
    ev.FrameRejected,
)

#: Events only an opened socket can produce.
_FROM_SOCKET = (*_INBOUND, ev.SocketClosed, ev.HeartbeatSent, ev.HeartbeatSendFailed)

#: Expected ends (the server asked for them) are logged at INFO, the others at WARNING.
_EXPECTED_DELAYS = (Delay.NOW, Delay.ROTATION)

_NEVER = float("-inf")
_WRITE_CHECKPOINT = cmd.WriteCheckpoint()  # no fields: one instance serves every write
_REQUEST_PERMIT = cmd.RequestIdentifyPermit()
#: Timers that run while no attempt is open (between attempts).
_BETWEEN_ATTEMPTS = (Timer.BACKOFF, Timer.PERMIT)

#: Monotonic clocks are floats: a socket opened at 12345.678 and ended 5.00 s later may
#: subtract to 4.9999999999. This much grace keeps "5.00 s is not quick" true.
QUICK_GRACE_S = 5e-7
#: A heartbeat or ACK-deadline timer this late means our own loop was stalled (rule 21).
STALL_GRACE_S = 0.1
#: After a stall, judge again this fraction of the heartbeat interval later (once per beat).
STALL_RECHECK_RATIO = 0.1
#: Details the driver reports (a send error, a rejected frame) are logged shortened to this.
DETAIL_CHARS = 200
#: A raw Hello interval that was replaced is logged shortened to this (it may be anything).
RAW_VALUE_CHARS = 40
#: The snapshot lists this many of the last seqs skipped as poison frames (rule 19).
SKIPPED_KEPT = 20
