import Testing
import Foundation
import TestSupport

/// Where people already work: mount(8) and fstab through the mount helper, shell completion of the
/// store's names, the man page, the README inside every mount.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)), .serialized)
struct Places {
    /// `mount -t fuse.aetherfs` and an fstab line run the binary as `mount.fuse.aetherfs` (a link to
    /// it in /sbin, put there for the test and taken away after); `umount` unmounts.
    @Test func mountAndFstabMountThroughTheHelper() throws {
        try inMount(#"""
        set -E
        helper=/sbin/mount.fuse.aetherfs
        saved=; [ -e $helper ] && { saved=$T/saved-helper; cp -P $helper $saved; }
        trap 'umount $T/m 2>/dev/null || true; umount $T/f 2>/dev/null || true; rm -f $helper; if [ -n "$saved" ]; then cp -P $saved $helper; fi' EXIT
        ln -sf $A $helper
        mkdir $T/m $T/f
        mount -t fuse.aetherfs work $T/m -o store=$T/store2,allow_other,nofail
        [ "$(findmnt -n -o FSTYPE $T/m)" = fuse.aetherfs ]
        echo hello > $T/m/a; echo saved > $T/m/.aether/checkpoint
        umount $T/m
        if findmnt $T/m > /dev/null; then echo "still mounted" >&2; exit 1; fi
        printf 'work %s fuse.aetherfs store=%s,nofail,x-systemd.automount 0 0\n' $T/f $T/store2 > $T/fstab
        mount -T $T/fstab $T/f
        [ "$(cat $T/f/a)" = hello ] && [ "$(findmnt -n -o FSTYPE $T/f)" = fuse.aetherfs ]
        $A checkpoints work --store $T/store2 | has saved
        umount $T/f
        # A bad option is refused with one line, nothing mounted.
        if mount -t fuse.aetherfs work $T/m -o store=$T/store2,bogus 2>err; then exit 1; fi; has 'unknown mount option bogus' err
        if findmnt $T/m > /dev/null; then echo "mounted though refused" >&2; exit 1; fi
        """#)
    }

    /// The bash completion script loads and completes the store's session and checkpoint names; the
    /// man page renders and has every subcommand; `.aether/README` lists every control file.
    @Test func completionsManPageAndTheMountsReadme() throws {
        try inMount(#"""
        echo '{"message":"m","name":"green"}' > .aether/checkpoint
        $A session create review > /dev/null
        $A --generate-completion-script bash > $T/aetherfs.bash
        cat > $T/complete.sh <<'SH'
        source $1; complete -p aetherfs | grep -q _aetherfs
        ask() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
                _aetherfs aetherfs "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"; echo "${COMPREPLY[*]}"; }
        [ "$(ask aetherfs restore re)" = review ] || { echo "sessions: [$(ask aetherfs restore re)]" >&2; exit 1; }
        [ "$(ask aetherfs restore s gr)" = green ] || { echo "checkpoints: [$(ask aetherfs restore s gr)]" >&2; exit 1; }
        SH
        PATH=$(dirname $A):$PATH bash $T/complete.sh $T/aetherfs.bash
        $A --generate-completion-script zsh | has compdef
        $A --generate-completion-script fish | has -E "^complete -c '?aetherfs"
        page=$(dirname $(dirname $(dirname $(dirname $A))))/docs/aetherfs.1
        man -l $page > $T/man.txt 2>/dev/null
        verbs=$($A help 2>&1 | awk '/^SUBCOMMANDS:/ {on=1; next} on && /^  [a-z]/ {print $1}'); [ $(echo $verbs | wc -w) -gt 20 ]
        for verb in $verbs; do
          has -w "$verb" $T/man.txt || { echo "the man page lacks $verb (Scripts/setup --install makes it again)" >&2; exit 1; }
        done
        for f in checkpoint restore fork commit propose promote import status log last README; do
          has "^$f" .aether/README
        done
        """#)
    }

    /// `.aether/stats` and `aetherfs stats` count the requests the daemon answers, by operation.
    @Test func statsCountTheRequestsMade() throws {
        try inMount(#"""
        count() { /usr/bin/python3 -c "import json,sys; r = json.load(open('$1'))['requests']; print(r.get('$2', {}).get('count', 0))"; }
        cat .aether/stats > $T/before.json
        for i in $(seq 30); do echo $i > f$i; done
        for i in $(seq 10); do cat f$i > /dev/null; done
        echo '{"message":"m"}' > .aether/checkpoint
        $A stats s --json > $T/after.json
        [ $(( $(count $T/after.json create) - $(count $T/before.json create) )) -eq 30 ]
        [ $(( $(count $T/after.json write) - $(count $T/before.json write) )) -ge 30 ]
        [ $(( $(count $T/after.json read) - $(count $T/before.json read) )) -ge 10 ]
        /usr/bin/python3 -c "
        import json
        a = json.load(open('$T/after.json'))
        c = a['requests']['create']
        assert c['p50_us'] <= c['p99_us'] <= c['max_us'] and c['mean_us'] > 0, c
        assert a['actions'].get('checkpoint', 0) >= 1 and a['bytes_written'] >= 30 and a['objects']['written'] > 0, a
        "
        $A stats s | has '^create *[0-9]* requests'
        if $A stats nosuch 2>err; then exit 1; fi; has 'not found' err
        """#)
    }

    /// `aetherfs mcp`: an agent initializes, lists the tools, checkpoints, changes a file, diffs,
    /// restores and proposes through JSON-RPC on standard input and output; errors are results with
    /// `isError` and the CLI's line; no tool reviews.
    @Test func mcpToolsDriveTheSession() throws {
        try inMount(#"""
        echo one > a
        timeout 60 /usr/bin/python3 - "$A" "$M" <<'PY'
        import json, subprocess, sys
        aetherfs, mount = sys.argv[1], sys.argv[2]
        p = subprocess.Popen([aetherfs, "mcp", "--session", "s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ids = iter(range(1, 100))
        def call(method, params=None):
            m = {"jsonrpc": "2.0", "id": next(ids), "method": method}
            if params is not None: m["params"] = params
            p.stdin.write(json.dumps(m) + "\n"); p.stdin.flush()
            r = json.loads(p.stdout.readline())
            assert r["id"] == m["id"] and "result" in r, r
            return r["result"]
        def tool(t, **args):
            r = call("tools/call", {"name": t, "arguments": args})
            return r.get("isError", False), r["content"][0]["text"]
        init = call("initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}})
        assert init["serverInfo"]["name"] == "aetherfs" and "tools" in init["capabilities"], init
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n"); p.stdin.flush()
        names = [t["name"] for t in call("tools/list")["tools"]]
        assert names == ["status", "checkpoint", "restore", "fork", "diff", "log", "propose"], names
        err, text = tool("checkpoint", message="before", name="one")
        assert not err and json.loads(text)["name"] == "one" and json.loads(text)["state"] == "saved", text
        open(mount + "/a", "w").write("two\n")
        err, text = tool("diff", **{"from": "s@one"})
        assert not err and [c["path"] for c in json.loads(text)] == ["a"], text
        err, text = tool("restore", checkpoint="one")
        assert not err and open(mount + "/a").read() == "one\n", (text, open(mount + "/a").read())
        err, text = tool("status")
        assert not err and json.loads(text)["mountpoint"] == mount, text
        err, text = tool("log")
        assert not err and json.loads(text)[0]["name"] == "one", text
        err, text = tool("fork", name="agent-b")
        assert not err and json.loads(text)["session"] == "agent-b", text
        err, text = tool("propose", message="agent work")
        assert not err and json.loads(text)["state"] == "open", text
        err, text = tool("restore", checkpoint="nosuch")
        assert err and text.startswith("error: ") and "not found" in text, text
        err, text = tool("review", id="x")
        assert err and "no tool" in text, text
        err, text = tool("checkpoint")
        assert err and "needs \"message\"" in text, text
        p.stdin.close(); assert p.wait(10) == 0
        PY
        $A audit --json | has '"action":"restore"'
        """#)
    }

    /// A long operation shows one progress line on a terminal (done of total, MiB and rate, time
    /// left) and nothing when its standard error is not one.
    @Test func verifyShowsProgressOnATerminalOnly() throws {
        try inMount(#"""
        for i in 1 2 3; do head -c 64000000 /dev/urandom > big$i; echo "cp $i" > .aether/checkpoint; done
        cd $T
        script -qec "$A verify --read-data" /dev/null > tty.txt
        has 'verify: [0-9]* of [0-9]* snapshots and sessions, [0-9]* MiB at [0-9]* MiB/s' tty.txt
        has 'is clean' tty.txt
        $A verify --read-data 2> piped.err | cat > piped.out
        [ ! -s piped.err ] && has 'is clean' piped.out && ! has 'verify:' piped.out
        """#, timeout: 600)
    }
}
