//! beamline-supervision
