"""Runs: train into a run folder, resume one, load one for prediction (the public names, from the modules
that do each job: :mod:`jaxcnn.session`, :mod:`jaxcnn.run_files`, :mod:`jaxcnn.run_folder`,
:mod:`jaxcnn.callbacks`)."""

from __future__ import annotations

from jaxcnn.callbacks import Callback as Callback
from jaxcnn.run_files import PREDICT_BATCH as PREDICT_BATCH
from jaxcnn.run_files import Run as Run
from jaxcnn.run_files import check_spec_matches as check_spec_matches
from jaxcnn.run_files import load_run as load_run
from jaxcnn.run_files import read_config as read_config
from jaxcnn.run_files import read_metrics as read_metrics
from jaxcnn.run_files import run_data_dir as run_data_dir
from jaxcnn.run_files import spec_from_config as spec_from_config
from jaxcnn.run_files import write_atomic as write_atomic
from jaxcnn.run_files import write_metrics as write_metrics
from jaxcnn.run_folder import RUN_FORMAT as RUN_FORMAT
from jaxcnn.run_folder import RunError as RunError
from jaxcnn.session import NothingToResumeError as NothingToResumeError
from jaxcnn.session import RunResult as RunResult
from jaxcnn.session import TrainingDivergedError as TrainingDivergedError
from jaxcnn.session import TrainingInterruptedError as TrainingInterruptedError
from jaxcnn.session import check_out as check_out
from jaxcnn.session import resume_run as resume_run
from jaxcnn.session import train_run as train_run
