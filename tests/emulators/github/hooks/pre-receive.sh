#!/bin/sh
# pre-receive hook of the GitHub emulator.
# The emulator sets EMULATOR_WORKFLOWS_ALLOWED=0 for pushes by a GitHub App installation
# token that lacks the `workflows` permission; such pushes may not touch .github/workflows/.
zero=0000000000000000000000000000000000000000
if [ "${EMULATOR_WORKFLOWS_ALLOWED:-1}" = "1" ]; then
    cat >/dev/null
    exit 0
fi
status=0
while read -r old new ref; do
    [ "$new" = "$zero" ] && continue
    if [ "$old" = "$zero" ]; then
        changed=$(git rev-list "$new" --not --all | while read -r commit; do
            git diff-tree -r --no-commit-id --name-only --root "$commit"
        done)
    else
        changed=$(git diff --name-only "$old" "$new")
    fi
    workflow=$(printf '%s\n' "$changed" | grep '^\.github/workflows/' | head -n 1)
    if [ -n "$workflow" ]; then
        echo "refusing to allow a GitHub App to create or update workflow \`$workflow\` without \`workflows\` permission" >&2
        status=1
    fi
done
exit $status
