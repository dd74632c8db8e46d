"""Record definitions and Arrow schemas shared by every stage (see ``records``)."""

from counterpoint.schemas.records import *  # noqa: F401,F403
from counterpoint.schemas.records import (  # noqa: F401  (explicit re-exports for readers)
    OUTPUT_TABLES,
    ColumnSpec,
    TableSpec,
    content_id,
    make_reject,
    rows_to_table,
    table,
)
# Registers the trainer-ready export configs into OUTPUT_TABLES (gate and card see them, in workers too).
from counterpoint.schemas import exports  # noqa: E402,F401
# Registers the corrections config (issue 22) the same way.
from counterpoint.schemas import corrections  # noqa: E402,F401
# Registers the critical_tokens config (issue 21) the same way.
from counterpoint.schemas import critical  # noqa: E402,F401
