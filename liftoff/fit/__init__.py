"""The fit engine: which models this node can run, how well, and where a reader's model should go.

`hardware` describes a node and `detect` asks this machine (only the supervisor's detection child and `liftoff
fit` do; gateway workers read the `facts` the supervisor publishes), `catalog`/`repository` know the models,
`estimates`/`scoring`/`analysis` judge one model on one node, `report` builds the API envelope, `placement` places
readers, `calibration` keeps measurements, `api` and `cli` are the HTTP and command-line faces.
"""

from liftoff.core.calibration import Measurement, MeasurementStore, record_measurement
from liftoff.fit.placement import Placement, PlacementRefused, RunningReader, place

__all__ = ["Measurement", "MeasurementStore", "Placement", "PlacementRefused", "RunningReader", "place",
           "record_measurement"]
