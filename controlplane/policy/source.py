"""Where revisions come from: the working tree of a policy dir, or a git repository."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Protocol

from controlplane.engine.bundle import (
    PolicyBundle,
    base_commit,
    is_uncommitted,
    load_bundle,
    short_revision,
)
from controlplane.errors import PolicyError
from controlplane.settings import Settings

GIT_TIMEOUT = 120

log = logging.getLogger(__name__)


class PolicySource(Protocol):
    @property
    def description(self) -> str:
        """Where the policies come from, for revision records."""
        ...

    @property
    def allows_uncommitted(self) -> bool:
        """Whether revisions with uncommitted edits may be activated."""
        ...

    def fetch(self) -> PolicyBundle:
        """The source's current revision, read whole."""
        ...


@dataclass(frozen=True)
class WorkingTree:
    """A policy directory on disk (the laptop and demo default). A tree in git with
    uncommitted edits gives its last commit, unless `allows_uncommitted` (the
    development setting `TOLLGATE_POLICY_ALLOW_UNCOMMITTED`, or an impact report's
    `worktree`): a server must not decide with edits nobody committed or reviewed."""

    root: Path
    allows_uncommitted: bool = False

    @property
    def description(self) -> str:
        return str(self.root.resolve())

    def fetch(self) -> PolicyBundle:
        bundle = load_bundle(self.root)
        if not is_uncommitted(bundle.revision):
            return bundle
        if self.allows_uncommitted:
            log.warning(
                "TOLLGATE_POLICY_ALLOW_UNCOMMITTED is on: %s has uncommitted edits, read as "
                "revision %s. For development only: never set it on a server that enforces",
                self.description,
                short_revision(bundle.revision),
            )
            return bundle
        commit = base_commit(bundle.revision)
        log.warning(
            "%s has uncommitted edits; they are not activated, its last commit %s is. Commit "
            "them, or set TOLLGATE_POLICY_ALLOW_UNCOMMITTED=1 while developing",
            self.description,
            short_revision(commit),
        )
        top = _toplevel(self.root)
        subdir = self.root.resolve().relative_to(top).as_posix()
        return _archived(top, commit, "" if subdir == "." else subdir, self.description)


@dataclass(frozen=True)
class GitRepository:
    """A git repository at a ref, mirrored under the data dir; a revision is the commit."""

    url: str
    ref: str
    subdir: str
    mirror: Path

    @property
    def allows_uncommitted(self) -> bool:
        return False  # every revision is a commit

    @property
    def description(self) -> str:
        sub = f" ({self.subdir})" if self.subdir else ""
        return f"{self.url}@{self.ref}{sub}"

    def fetch(self) -> PolicyBundle:
        self._update_mirror()
        commit = self._git("rev-parse", "--verify", f"{self.ref}^{{commit}}").strip()
        return _archived(self.mirror, commit, self.subdir, self.description)

    def _update_mirror(self) -> None:
        if (self.mirror / "HEAD").exists():
            self._git("fetch", "--prune", "--quiet", "origin")
            return
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["git", "clone", "--mirror", "--quiet", self.url, str(self.mirror)],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise PolicyError(
                f"cannot clone the policy repository {self.url}: {done.stderr.strip()}; "
                "check TOLLGATE_POLICY_REPO"
            )

    def _git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.mirror), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise PolicyError(
                f"{self.description}: git {args[0]} failed: {done.stderr.strip()}; "
                "check TOLLGATE_POLICY_REPO and TOLLGATE_POLICY_REF"
            )
        return done.stdout


def _archived(git_dir: Path, commit: str, subdir: str, description: str) -> PolicyBundle:
    """The policies under `subdir` as committed in `commit`, read from `git archive`."""
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(git_dir),
            "archive",
            "--format=tar",
            commit,
            *([subdir] if subdir else []),
        ],
        capture_output=True,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    if archive.returncode != 0:
        raise PolicyError(
            f"{description}: cannot read {subdir or 'the tree'} at {commit[:12]}: "
            f"{archive.stderr.decode(errors='replace').strip()}"
        )
    with tempfile.TemporaryDirectory(prefix="tollgate-policy-") as tmp:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        return _detached(load_bundle(Path(tmp) / subdir, revision=commit))


def _toplevel(root: Path) -> Path:
    done = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        raise PolicyError(f"{root}: cannot find its git repository: {done.stderr.strip()}")
    return Path(done.stdout.strip()).resolve()


def _detached(bundle: PolicyBundle) -> PolicyBundle:
    """The bundle no longer points into the temporary checkout."""
    return PolicyBundle(
        root=Path(f"git:{bundle.revision[:12]}"),
        revision=bundle.revision,
        modules=bundle.modules,
        data=bundle.data,
    )


def source_from(settings: Settings) -> PolicySource:
    if not settings.policy_repo:
        return WorkingTree(settings.policy_dir, settings.policy_allow_uncommitted)
    key = hashlib.sha256(settings.policy_repo.encode()).hexdigest()[:12]
    return GitRepository(
        url=settings.policy_repo,
        ref=settings.policy_ref,
        subdir=settings.policy_subdir.strip("/"),
        mirror=settings.data_dir / "policy-repos" / key,
    )


WORKTREE = "worktree"


def source_at(settings: Settings, revision: str) -> PolicySource:
    """The policies as of `revision`: `worktree` (the policy dir as it is on disk), or a
    commit, branch or tag of the policy repository (TOLLGATE_POLICY_REPO, else the git
    repository holding TOLLGATE_POLICY_DIR)."""
    if revision == WORKTREE:
        # Measuring uncommitted edits is what `worktree` is for; it activates nothing.
        return WorkingTree(settings.policy_dir, allows_uncommitted=True)
    if settings.policy_repo:
        url, subdir = settings.policy_repo, settings.policy_subdir.strip("/")
    else:
        root = settings.policy_dir.resolve()
        try:
            top = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            raise PolicyError(
                f"{root} is not in a git repository, so revision {revision!r} cannot be read "
                f"from it; use a recorded revision (GET /v1/policies) or `{WORKTREE}`"
            ) from None
        url, subdir = top, root.relative_to(Path(top).resolve()).as_posix()
        subdir = "" if subdir == "." else subdir
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return GitRepository(
        url=url, ref=revision, subdir=subdir, mirror=settings.data_dir / "policy-repos" / key
    )
