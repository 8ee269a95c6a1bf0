"""Representative (calibration) data: every accepted form turned into validated numpy batches."""

from kerasq.data.representative import InputSpec, RepresentativeData, input_specs_from_model

__all__ = ["InputSpec", "RepresentativeData", "input_specs_from_model"]
