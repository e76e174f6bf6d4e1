import Testing
import Foundation
import TestSupport

/// `aetherfs serve` driven with curl, as any HTTP client would: tokens and scopes, a checkpoint of a
/// mounted session through its daemon, export and import, bad requests, revocation.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct ServiceSurface {
    @Test func tokensScopesExportImportAndErrorsOverHTTP() throws {
        try inMount(#"""
        $A token create writer --scope write > $T/w 2> /dev/null
        $A token create reader --scope read --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > $T/r
        $A token list | has 'writer  write'
        ! $A token list --json | has "$(cat $T/w)"
        $A serve --listen 127.0.0.1:0 --max-upload 4MiB > $T/serve.out 2>&1 & pid=$!
        trap 'kill $pid 2>/dev/null || true; true' EXIT
        for i in $(seq 200); do grep -q listening $T/serve.out && break; sleep 0.05; done
        u=http://$(sed -n 's/^listening on //p' $T/serve.out)
        call() { curl -s -m 60 -o $T/body -w '%{http_code}' "$@"; }
        R="Authorization: Bearer $(cat $T/r)"; W="Authorization: Bearer $(cat $T/w)"
        [ $(call $u/v1/health) = 200 ]
        [ $(call $u/v1/sessions) = 401 ] && has '"code":"unauthenticated"' < $T/body
        [ $(call -H "Authorization: Bearer aet_nope" $u/v1/sessions) = 401 ]
        [ $(call -H "$R" $u/v1/sessions) = 200 ] && has '"name":"s"' < $T/body
        [ $(call -H "$R" $u/v1/sessions/s) = 200 ] && has "\"mountpoint\":\"$M\"" < $T/body
        [ $(call -H "$R" $u/v1/sessions/nosuch) = 404 ] && has '"code":"not_found"' < $T/body
        [ $(call -X DELETE -H "$R" $u/v1/sessions) = 405 ]
        [ $(call -H "$R" $u/v1/nothing) = 404 ]
        # A read token cannot write; a write token checkpoints the mounted session through its daemon.
        echo data > f; ln f hard; ln -s f link; mkfifo fifo; setfattr -n user.k -v v f
        [ $(call -X POST -H "$R" -d '{"message":"m"}' $u/v1/sessions/s/checkpoints) = 403 ] && has '"code":"permission_denied"' < $T/body
        [ $(call -X POST -H "$W" -d '{"message":"over http","name":"web"}' $u/v1/sessions/s/checkpoints) = 201 ] && has '"name":"web"' < $T/body
        [ "$(cat .aether/checkpoints/web/f)" = data ] && $A checkpoints s | has web
        [ $(call -X POST -H "$W" -d '{"mesage":"typo"}' $u/v1/sessions/s/checkpoints) = 400 ] && has 'unknown key' < $T/body
        [ $(call -X POST -H "$W" -d '{"message":"again","name":"web"}' $u/v1/sessions/s/checkpoints) = 409 ]
        # Export: the same bytes the CLI writes, which GNU tar extracts as the view shows it.
        [ $(call -H "$R" "$u/v1/snapshots/s@web/export") = 200 ] && cp $T/body $T/web.tar
        $A export s@web -o - | cmp - $T/web.tar
        mkdir $T/x; tar --xattrs -xpf $T/web.tar -C $T/x
        cmp $T/x/f f && [ "$(stat -c %i $T/x/f)" = "$(stat -c %i $T/x/hard)" ] && [ -p $T/x/fifo ] && [ "$(readlink $T/x/link)" = f ]
        [ "$(getfattr --only-values -n user.k $T/x/f)" = v ]
        [ $(call -H "$R" "$u/v1/snapshots/nosuch/export") = 404 ] && [ $(call -H "$R" "$u/v1/snapshots/web/export?format=zip") = 400 ]
        # Import: an upload becomes a session that exports to the same bytes; refusals change nothing.
        [ $(call -X POST -H "$R" --data-binary @$T/web.tar "$u/v1/import?session=up") = 403 ]
        [ $(call -X POST -H "$W" --data-binary @$T/web.tar "$u/v1/import?session=up") = 201 ] && has '"entries":5' < $T/body
        $A export up -o - | cmp - $T/web.tar
        [ $(call -X POST -H "$W" --data-binary @$T/web.tar "$u/v1/import?session=up") = 409 ]
        [ $(call -X POST -H "$W" --data-binary @$T/web.tar "$u/v1/import") = 400 ]
        /usr/bin/python3 -c 'import io, sys, tarfile
        t = tarfile.open(sys.argv[1], "w"); i = tarfile.TarInfo("../escape"); i.size = 1; t.addfile(i, io.BytesIO(b"x")); t.close()' $T/evil.tar
        [ $(call -X POST -H "$W" --data-binary @$T/evil.tar "$u/v1/import?session=evil") = 400 ] && has '\.\./escape' < $T/body
        head -c 5000000 /dev/urandom > $T/big; tar -cf $T/big.tar -C $T big
        [ $(call -X POST -H "$W" --data-binary @$T/big.tar "$u/v1/import?session=big") = 413 ]
        [ "$($A session list --json | /usr/bin/python3 -c 'import json,sys; print(sorted(s["name"] for s in json.load(sys.stdin)))')" = "['s', 'up']" ]
        # Commits, forks and a commit on a branch that moved since its base (409).
        [ $(call -X POST -H "$W" -d 'first' $u/v1/sessions/s/commits) = 201 ] && has '"kind":"commit"' < $T/body
        [ $(call -X POST -H "$W" -d 'late' $u/v1/sessions/s/forks) = 201 ] && $A session list | has late
        echo more > g
        [ $(call -X POST -H "$W" -d 'second' $u/v1/sessions/s/commits) = 201 ]
        [ $(call -X POST -H "$W" -d '{"message":"stale","allow_empty":true}' $u/v1/sessions/late/commits) = 409 ] && has '"code":"branch_moved"' < $T/body
        [ $(call -H "$R" $u/v1/log/main) = 200 ] && [ "$(grep -o '"kind":"commit"' $T/body | wc -l)" = 2 ]
        [ $(call -H "$R" $u/v1/branches) = 200 ] && has '"name":"main"' < $T/body
        [ $(call -H "$R" "$u/v1/diff?from=s@web&to=s") = 200 ] && has '"path":"g"' < $T/body
        [ $(call -H "$R" "$u/v1/diff?from=s@web") = 400 ]
        # A proposal; the author's own token cannot approve it, another uid's can.
        echo proposed > h
        [ $(call -X POST -H "$W" -d '{"message":"please","meta":{"ticket":"T-1"}}' $u/v1/sessions/s/proposals) = 201 ]
        prop=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' $T/body)
        [ $(call -X POST -H "$W" -d '{"verdict":"approve"}' $u/v1/proposals/$prop/reviews) = 403 ]
        $A token create mine --scope review > $T/mine 2> /dev/null
        $A token create other --scope review --as 1000 > $T/other 2> /dev/null
        [ $(call -X POST -H "Authorization: Bearer $(cat $T/mine)" -d '{"verdict":"approve"}' $u/v1/proposals/$prop/reviews) = 403 ] && has '"code":"permission_denied"' < $T/body
        [ $(call -X POST -H "Authorization: Bearer $(cat $T/other)" -d '{"verdict":"approve","comment":"fine"}' $u/v1/proposals/$prop/reviews) = 201 ] && has '"state":"approved"' < $T/body
        [ $(call -X POST -H "Authorization: Bearer $(cat $T/other)" -d '{"verdict":"maybe"}' $u/v1/proposals/$prop/reviews) = 400 ]
        [ $(call -H "$R" "$u/v1/proposals?state=approved") = 200 ] && has "\"id\":\"$prop\"" < $T/body
        [ $(call -H "$R" "$u/v1/proposals?state=bogus") = 400 ]
        # Sessions made and deleted; every changing request is audited with its token's name.
        [ $(call -X POST -H "$W" -d '{"name":"blank"}' $u/v1/sessions) = 201 ] && has '"name":"blank"' < $T/body
        [ $(call -X POST -H "$W" -d '{"name":"blank"}' $u/v1/sessions) = 409 ]
        [ $(call -X POST -H "$W" -d '{"nam":"x"}' $u/v1/sessions) = 400 ]
        [ $(call -X DELETE -H "$W" $u/v1/sessions/blank) = 200 ] && [ $(call -X DELETE -H "$W" $u/v1/sessions/s) = 409 ]
        $A audit --json | has 'POST /v1/sessions/s/commits token writer'
        # A revoked token lets nobody in.
        $A token revoke writer > /dev/null
        [ $(call -H "$W" $u/v1/sessions) = 401 ]
        $A audit --json | has '"action":"token-revoke"'
        kill $pid; wait $pid || true
        $A verify > /dev/null
        """#)
    }

    /// 32 readers and 8 uploaders for 30 s on loopback: every answer is the one expected, the server's
    /// memory stays bounded, and the store verifies afterwards.
    @Test func readersAndUploadersUnderLoadGetOnlyTheAnswersExpected() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Scripts/loadtest.py").standardized.path
        try inMount(#"""
        mkdir d; for i in $(seq 50); do head -c 10000 /dev/urandom > d/f$i; done
        echo '{"message":"base","name":"base"}' > .aether/checkpoint; echo c1 > .aether/commit
        $A token create w --scope write > $T/w 2> /dev/null; $A token create r --scope read > $T/r 2> /dev/null
        $A serve --listen 127.0.0.1:0 > $T/serve.out 2>&1 & pid=$!
        trap 'kill $pid 2> /dev/null || true; true' EXIT
        for i in $(seq 200); do grep -q listening $T/serve.out && break; sleep 0.05; done
        /usr/bin/python3 LOADTEST --url http://$(sed -n 's/^listening on //p' $T/serve.out) --read-token $(cat $T/r) --write-token $(cat $T/w) \
          --export s@base --seconds 30 --pid $pid --max-rss-mib 400 > $T/load.json || { cat $T/load.json >&2; exit 1; }
        cat $T/load.json >&2
        [ "$($A session list --json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)) > 10)')" = True ]
        kill $pid; wait $pid || true
        $A verify --read-data > /dev/null
        """#.replacingOccurrences(of: "LOADTEST", with: script), timeout: 300)
    }

    /// HTTPS with a certificate of its own: curl and sync that trust it get through, one that does not
    /// is told why.
    @Test func httpsWithACertificateTheClientsTrust() throws {
        try inMount(#"""
        openssl req -x509 -newkey rsa:2048 -nodes -keyout $T/key.pem -out $T/cert.pem -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2> /dev/null
        echo data > f; echo one > .aether/checkpoint
        C="env AETHERFS_STORE=$T/c"
        $C $A init > /dev/null; $C $A token create w --scope write > $T/w 2> /dev/null
        $C $A serve --listen 127.0.0.1:0 --tls-cert $T/cert.pem --tls-key $T/key.pem > $T/serve.out 2>&1 & pid=$!
        trap 'kill $pid 2> /dev/null || true; true' EXIT
        for i in $(seq 200); do grep -q listening $T/serve.out && break; sleep 0.05; done
        grep -q '(https)' $T/serve.out
        u=https://$(sed -n 's/^listening on \([^ ]*\).*/\1/p' $T/serve.out)
        [ "$(curl -s --cacert $T/cert.pem $u/v1/health)" = '{"status":"ok","version":"'$($A --version | sed 's/aetherfs \([^ ]*\).*/\1/')'"}' ]
        ! curl -s -o /dev/null $u/v1/health
        ! AETHERFS_TOKEN=$(cat $T/w) $A sync push $u --session s 2> $T/err && has 'certificate is not one this host trusts' $T/err
        AETHERFS_TOKEN=$(cat $T/w) $A sync push $u --session s --ca-file $T/cert.pem > /dev/null
        [ "$($C $A checkpoints s --json | grep -c '"name":"cp-1"')" = 1 ]
        ! $A serve --tls-cert $T/cert.pem 2> $T/err && has 'both --tls-cert and --tls-key' $T/err
        """#)
    }
}
