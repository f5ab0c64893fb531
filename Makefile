# Thin wrapper: every target creates .venv and installs what it needs, so each
# works on a fresh machine with only Python 3.10+ installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
EXAMPLES := examples/quickstart.py examples/backends_and_artefacts.py examples/parallel_sweep.py \
	examples/metrics_and_queries.py examples/sweep_dask.py

.PHONY: help install demo test lint typecheck pytest compat docs bench clean mutate

help:
	@echo "make demo   - create .venv, install (with the dask and ui extras), run the examples,"
	@echo "              then print the command that shows their runs in a browser"
	@echo "make test   - create .venv, install dev extras, run ruff, import-linter, mypy, pytest and 2.0.4's suite"
	@echo "make docs   - build the Sphinx docs offline, warnings as errors"
	@echo "make bench  - benchmarks against digital-experiments 2.0.4"
	@echo "make mutate - mutation testing (slow); MODULE=_runs.context for one module"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# the examples include a Dask cluster (examples/sweep_dask.py), and the demo ends
# with the web view of their runs: demo installs those two extras
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dask,ui]"
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,dask,slurm,ui,s3]"
	touch $@

install: $(VENV)/.installed

# The examples write under examples/experiments (DE_ROOT is left out: the demo's
# runs stay in one place), and the commands printed name the command line by its
# full path, so they work as shown in any shell, with no virtual environment active.
DEMO_CLI := $(CURDIR)/$(BIN)/digital-experiments
DEMO_ROOT := $(CURDIR)/examples/experiments

demo: $(VENV)/.installed-demo
	@set -e; unset DE_ROOT; for ex in $(EXAMPLES); do \
		echo "=== $$ex"; (cd examples && ../$(BIN)/python $$(basename $$ex)); \
	done
	@echo "=== the demo's runs"
	@echo "in a table:      $(DEMO_CLI) list $(DEMO_ROOT)"
	@echo "in a browser (Ctrl-C stops it; add --open to open the page):"
	@echo "  $(DEMO_CLI) ui $(DEMO_ROOT)"

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks docs/conf.py
	$(BIN)/ruff format --check src tests examples benchmarks docs/conf.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

# 2.0.4's own test suite, downloaded from PyPI, against this package
compat: $(STAMP)
	$(BIN)/python tests/compat/run_v2_suite.py

test: lint typecheck pytest compat

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/targets_bench.py
	$(BIN)/python benchmarks/results_bench.py
	$(BIN)/python benchmarks/ui_bench.py
	$(BIN)/python benchmarks/s3_bench.py

# Mutation testing with mutmut over _store.files, _record.run, _sweep.claims,
# _sweep.engine, _runs.context, _model.where, _model.keys, _store.lease,
# _runs.annotations, _runs.metrics, _read.trash, _runs.heartbeats,
# _store.memory and _store.blobs ([tool.mutmut] in pyproject.toml).
# MODULE=_model.where mutates one module only, and runs its fast tier
# (MUTATE_TIER_<module>: the module's unit tests and the process tests that
# reach it; docs/testing.md).
# A module without a tier, or no MODULE, runs tests/. The tier is written to
# mutants/tier.txt, which pytest reads as @tier.txt (mutmut runs pytest in
# mutants/); mutmut still runs, for each mutant, only the tier's tests that
# reached the mutated function. Children spawned by tests import the mutated
# copy through PYTHONPATH; the folder must exist before Python starts, or the
# import system skips it.
MODULE ?=
MUTATE_STAMP := $(VENV)/.installed-mutate
MUTATE_TIER__model.where := tests/test_where.py tests/test_properties.py tests/test_query.py \
	tests/test_cli_results.py::test_list_where_sort_top_columns_and_formats \
	tests/test_cli_results.py::test_list_errors_point_at_the_query \
	tests/test_cli_results.py::test_rm_and_trash
MUTATE_TIER__model.keys := tests/test_keys.py tests/test_properties.py
MUTATE_TIER__store.lease := tests/test_lease.py
MUTATE_TIER__sweep.claims := tests/test_sweep.py \
	tests/stress/test_sweep_engines.py::test_process_pool_spawn \
	tests/stress/test_sweep_engines.py::test_two_processes_sweeping_one_root_run_each_config_once \
	tests/stress/test_sweep_engines.py::test_a_killed_sweep_resumes_where_it_stopped \
	tests/stress/test_sweep_engines.py::test_sigterm_to_a_sweep_driver_stops_its_pool_workers \
	tests/test_fuzz_readers.py::test_claim_files_of_any_type_are_read_without_error \
	tests/test_fuzz_readers.py::test_a_claim_of_any_content_is_taken_over_or_waited_for \
	tests/test_fuzz_readers.py::test_a_claim_nested_too_deep_for_json_reads_as_garbage \
	tests/test_results.py::test_a_sweep_waiting_for_a_run_deleted_meanwhile_does_not_run_it_again \
	tests/stress/test_liveness.py::test_a_sweep_never_takes_over_the_claim_of_another_namespace
MUTATE_TIER__store.files := tests/test_files.py tests/test_one_write.py tests/test_storage.py \
	tests/test_durability.py tests/test_fast_paths.py tests/stress/test_liveness.py \
	tests/test_runs.py::test_running_record_of_a_dead_process_reads_as_abandoned \
	tests/test_runs.py::test_temp_files_are_never_listed_and_dead_writers_leftovers_are_removed \
	tests/test_query.py::test_runs_share_one_read_only_environment \
	tests/stress/test_async_tasks.py::test_native_cancel_while_taking_the_cache_lock_gives_it_back
MUTATE_TIER__runs.annotations := tests/test_annotations.py \
	tests/test_fuzz_readers.py::test_annotations_of_any_shape_never_stop_a_listing \
	tests/test_fuzz_readers.py::test_an_annotation_file_no_parser_can_read_is_left_out \
	tests/test_fuzz_readers.py::test_tagging_never_overwrites_annotations_it_cannot_read_whole \
	tests/test_results.py::test_tags_and_notes_show_in_metadata_and_queries \
	tests/test_results.py::test_concurrent_taggers_never_lose_a_tag \
	tests/test_results.py::test_delete_restore_and_purge_move_every_part \
	tests/test_memory_roots.py::test_failures_statuses_queries_tags_and_notes \
	tests/test_fast_paths.py::test_tags_added_in_the_same_mtime_tick_as_a_listing_still_show \
	tests/test_cli_results.py::test_show_call_diff_tag_note \
	tests/stress/test_results_concurrency.py::test_writers_taggers_and_a_deleter_share_a_root
MUTATE_TIER__runs.metrics := tests/test_metrics.py \
	tests/test_fuzz_readers.py::test_a_metrics_file_cut_anywhere_keeps_its_whole_lines \
	tests/test_fuzz_readers.py::test_a_metrics_line_no_parser_can_read_is_skipped \
	tests/test_fast_paths.py::test_a_first_metric_in_the_same_mtime_tick_as_a_listing_still_shows \
	tests/test_s3_roots.py::test_a_running_runs_metrics_reach_the_bucket_before_it_ends \
	tests/test_s3_roots.py::test_a_failed_progress_upload_loses_nothing \
	tests/test_memory_roots.py::test_runs_are_recorded_and_read_back_with_their_metrics_and_artefacts \
	tests/test_hostile_input.py::test_a_metrics_line_of_the_wrong_shape_is_skipped \
	tests/test_hostile_input.py::test_a_torn_line_never_takes_the_next_writers_points \
	tests/test_results.py::test_where_strings_filter_on_config_result_status_and_metrics
MUTATE_TIER__read.trash := tests/test_results.py \
	tests/test_memory_roots.py \
	tests/test_s3_roots.py::test_the_trash_moves_a_run_whole_on_a_bucket_and_back \
	tests/test_s3_roots.py::test_a_purged_run_leaves_nothing_in_the_bucket \
	tests/test_s3_roots.py::test_a_delete_cut_short_is_finished_by_the_next \
	tests/test_s3_roots.py::test_a_restore_never_overwrites_a_run_that_took_the_id \
	tests/test_s3_roots.py::test_a_sweep_counts_a_run_deleted_since_it_began \
	tests/test_s3_trash_kill.py \
	tests/test_hostile_input.py::test_an_unreadable_record_can_be_deleted \
	tests/test_hostile_input.py::test_a_run_with_artefacts_on_another_disk_is_deleted_whole \
	tests/test_hostile_input.py::test_a_part_no_rename_can_move_leaves_the_whole_run_in_place \
	tests/test_hostile_input.py::test_a_sweep_runs_again_a_config_whose_run_was_deleted_before_it \
	tests/test_annotations.py::test_a_run_deleted_meanwhile_is_not_tagged \
	tests/test_annotations.py::test_a_run_deleted_during_a_retry_is_not_tagged \
	tests/test_first_hour.py::test_prune_purges_only_what_it_deleted \
	tests/test_first_hour.py::test_python_methods_take_id_prefixes_as_the_cli_does \
	tests/test_first_hour.py::test_an_ambiguous_prefix_is_refused_naming_the_runs \
	tests/test_first_hour.py::test_rm_yes_without_a_terminal_moves_the_run_to_the_trash \
	tests/test_cli_results.py::test_rm_and_trash \
	tests/stress/test_results_concurrency.py::test_writers_taggers_and_a_deleter_share_a_root
MUTATE_TIER__runs.heartbeats := tests/test_heartbeats_mutants.py tests/test_memory_roots.py \
	tests/test_s3_roots.py::test_a_run_of_another_host_silent_too_long_reads_abandoned \
	tests/test_s3_roots.py::test_the_same_record_in_an_unshared_folder_stays_running \
	tests/test_s3_roots.py::test_a_live_run_beats_and_its_heartbeat_goes_when_it_ends \
	tests/test_s3_roots.py::test_a_folder_on_a_network_filesystem_counts_as_shared
MUTATE_TIER__store.memory := tests/test_stores.py::test_a_store_in_memory_is_named_by_its_url_and_says_so_when_a_key_is_missing \
	tests/test_stores.py::test_a_store_in_memory_stages_in_a_folder_of_its_own \
	tests/test_stores.py::test_the_age_of_an_object_in_memory_counts_from_its_last_write \
	tests/test_stores.py::test_get_of_a_missing_key_raises_missing[memory] \
	tests/test_stores.py::test_put_then_get_gives_the_bytes_and_the_version[memory] \
	tests/test_stores.py::test_put_new_lets_one_writer_win[memory] \
	tests/test_stores.py::test_put_new_of_the_very_same_bytes_settles_as_ours[memory] \
	tests/test_stores.py::test_put_if_swaps_only_from_the_version_seen[memory] \
	tests/test_stores.py::test_list_is_sorted_one_level_and_filtered_by_name[memory] \
	tests/test_stores.py::test_delete_removes_and_a_missing_key_is_fine[memory] \
	tests/test_stores.py::test_get_many_keeps_the_order_and_marks_the_missing[memory] \
	tests/test_stores.py::test_read_many_keeps_the_order_and_gives_each_missing_key_its_error[memory] \
	tests/test_stores.py::test_write_and_has[memory] \
	tests/test_stores.py::test_modified_moves_when_a_folder_gets_a_key_or_says_it_cannot_tell[memory] \
	tests/test_stores.py::test_prepare_makes_a_folder_and_nothing_else[memory] \
	tests/test_stores.py::test_walk_finds_every_key_under_a_prefix[memory] \
	tests/test_stores.py::test_an_unsynced_put_is_still_whole[memory] \
	tests/test_stores.py::test_a_store_opened_twice_is_one_store \
	tests/test_stores.py::test_a_users_file_named_like_a_temp_file_is_listed_and_kept \
	tests/test_memory_roots.py
MUTATE_TIER__store.blobs := tests/test_storage.py::test_a_blob_costs_requests_only_until_it_is_known \
	tests/test_storage.py::test_a_blob_already_there_is_rewritten_only_if_damaged \
	tests/test_storage.py::test_an_environment_digested_already_is_written_alike_to_another_root \
	tests/test_storage.py::test_a_blob_that_cannot_be_read_warns_naming_it_and_what_is_wrong \
	tests/test_storage.py::test_upload_copies_only_the_prefix_in_key_order \
	tests/test_storage.py::test_download_keeps_local_files_and_never_syncs \
	tests/test_storage.py::test_environment_is_stored_once_and_referenced \
	tests/test_storage.py::test_editing_one_observations_environment_cannot_change_another \
	tests/test_storage.py::test_missing_environment_blob_loads_as_none \
	tests/test_storage.py::test_deleted_environment_blob_warns_once_and_is_rewritten \
	tests/test_storage.py::test_corrupt_environment_blob_warns_and_next_writer_repairs \
	tests/test_fast_paths.py::test_equal_environments_are_stored_once \
	tests/test_fast_paths.py::test_a_changed_environment_gets_a_new_blob \
	tests/test_fast_paths.py::test_equal_values_of_other_types_are_not_confused \
	tests/test_query.py::test_runs_share_one_read_only_environment \
	tests/test_query.py::test_select_can_leave_the_environment_out \
	tests/test_s3_roots.py::test_artefacts_are_uploaded_and_downloaded_on_demand \
	tests/test_s3_roots.py::test_an_upload_that_fails_keeps_the_result \
	tests/test_s3_roots.py::test_a_failed_run_keeps_its_artefacts_and_its_error \
	tests/test_memory_roots.py
MUTATE_TIER := $(or $(MUTATE_TIER_$(MODULE)),tests/)

$(MUTATE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,dask,slurm,mutate]"
	touch $@

mutate: $(MUTATE_STAMP)
	mkdir -p mutants/src
	printf '%s\n' $(MUTATE_TIER) > mutants/tier.txt
	PYTHONPATH=$(CURDIR)/mutants/src $(BIN)/mutmut run \
		$(if $(MODULE),"digital_experiments.$(MODULE).*")
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) docs/_build build dist src/*.egg-info tests/compat/.cache mutants
