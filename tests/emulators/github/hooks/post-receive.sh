#!/bin/sh
# post-receive hook of the GitHub emulator: appends "old new ref" lines to the file the
# emulator names in EMULATOR_PUSH_LOG, so it can announce the push once git is done.
if [ -n "$EMULATOR_PUSH_LOG" ]; then
    cat >>"$EMULATOR_PUSH_LOG"
else
    cat >/dev/null
fi
