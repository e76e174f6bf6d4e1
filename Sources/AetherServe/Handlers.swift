#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import HTTPTypes
import NIOCore
import NIOPosix
import AetherModel
import AetherCore
import AetherStore
import AetherVFS
import AetherArchive

/// What each route does: it reads the request, calls the use case the CLI calls (on NIO's thread
/// pool), and answers with the JSON the CLI's `--json` prints.
struct Handlers: Sendable {
    let repo: Repository
    let options: ServeOptions
    let leases: ReceivingLeases

    func sessions(_ c: APIContext) async throws -> Response {
        let repo = self.repo
        return json(try await blocking { () throws(AetherError) in try repo.sessions().map { SessionInfo(repo, $0) } })
    }

    func session(_ c: APIContext) async throws -> Response {
        let repo = self.repo, name = try parameter(c, "name")
        return json(try await blocking { () throws(AetherError) in SessionInfo(repo, try repo.session(named: name)) })
    }

    /// A session action (checkpoint, restore, fork, commit, propose, promote) as the token's uid:
    /// the body is what the action's control file takes, and the answer what it answers.
    func act(_ verb: String, _ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, name = try parameter(c, "name"), caller = c.token!.uid
        let text = try await body(r)
        let answer = try await blocking { () throws(AetherError) -> String in
            try SessionAccess.act(repo, session: name, try SessionRequest(verb: verb, payload: text), caller: caller).json
        }
        return rawJSON(answer, status: verb == "restore" ? .ok : .created)
    }

    /// A new session: `{"name": NEW, "from": REF}` (from: none for an empty one).
    func createSession(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, caller = c.token!.uid
        let fields = try object(try await body(r), known: ["name", "from"])
        guard let name = fields["name"] as? String else { throw APIError(.badRequest, "invalid", "the request needs \"name\" (a string)") }
        let from = fields["from"] as? String
        if fields["from"] != nil && from == nil { throw APIError(.badRequest, "invalid", "\"from\" must be a string") }
        return json(try await blocking { () throws(AetherError) in
            SessionInfo(repo, try repo.createSession(name: name, from: from, owner: caller))
        }, status: .created)
    }

    func deleteSession(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, name = try parameter(c, "name"), caller = c.token!.uid
        let force = try flag(r, "force")
        try await blocking { () throws(AetherError) in try repo.deleteSession(name: name, uid: caller, force: force) }
        return json(["deleted": name])
    }

    func retire(_ c: APIContext) async throws -> Response {
        let repo = self.repo, name = try parameter(c, "name"), caller = c.token!.uid
        return json(try await blocking { () throws(AetherError) in
            try repo.retire(name: name, uid: caller)
            return SessionInfo(repo, try repo.session(named: name))
        })
    }

    func checkpoints(_ c: APIContext) async throws -> Response {
        let repo = self.repo, name = try parameter(c, "name")
        return json(try await blocking { () throws(AetherError) in try repo.checkpoints(of: try repo.session(named: name)).reversed().map(SnapshotInfo.init) })
    }

    func proposals(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, state = r.uri.queryParameters.get("state").map { String($0) }
        if let state, ProposalState(rawValue: state) == nil {
            throw APIError(.badRequest, "invalid", "state \(state): expected \(ProposalState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return json(try await blocking { () throws(AetherError) in
            try domain { try repo.metadata.proposals() }.filter { state == nil || $0.state.rawValue == state }.map { (p) throws(AetherError) in try repo.info(p) }
        })
    }

    func proposal(_ c: APIContext) async throws -> Response {
        let repo = self.repo, id = try parameter(c, "id")
        return json(try await blocking { () throws(AetherError) in try repo.info(try repo.resolveProposal(id)) })
    }

    /// A review as the token's uid: `{"verdict": "approve"|"reject", "comment": …}`. The policy's rules
    /// hold as for a review at a shell (the author's own token is not an independent reviewer); a
    /// review over HTTP is not signed (the reviewer's key stays with the reviewer).
    func review(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, id = try parameter(c, "id"), caller = c.token!.uid
        let fields = try object(try await body(r), known: ["verdict", "comment"])
        guard let verdict = fields["verdict"] as? String, verdict == "approve" || verdict == "reject" else {
            throw APIError(.badRequest, "invalid", "\"verdict\" must be \"approve\" or \"reject\"")
        }
        let comment = fields["comment"] as? String ?? ""
        return json(try await blocking { () throws(AetherError) in
            try repo.info(try repo.review(id, approve: verdict == "approve", comment: comment, reviewer: caller, key: nil))
        }, status: .created)
    }

    func withdraw(_ c: APIContext) async throws -> Response {
        let repo = self.repo, id = try parameter(c, "id"), caller = c.token!.uid
        return json(try await blocking { () throws(AetherError) in try repo.info(try repo.withdraw(id, uid: caller)) })
    }

    /// What changed from one snapshot (or live session) to another: `?from=A&to=B`.
    func diff(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, q = r.uri.queryParameters
        guard let from = q.get("from").map({ String($0) }), let to = q.get("to").map({ String($0) }) else {
            throw APIError(.badRequest, "invalid", "give ?from=REF&to=REF")
        }
        return json(try await blocking { () throws(AetherError) in
            try repo.diff(try SessionAccess.root(repo, from), try SessionAccess.root(repo, to)).map(ChangeInfo.init)
        })
    }

    func branches(_ c: APIContext) async throws -> Response {
        let repo = self.repo
        return json(try await blocking { () throws(AetherError) in try repo.branches().map { BranchInfo(name: $0.name, head: SnapshotInfo($0.head)) } })
    }

    func log(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, branch = try parameter(c, "branch")
        let limit = try r.uri.queryParameters.get("limit").map { (text) throws(APIError) -> Int in
            guard let n = Int(text), n > 0 else { throw APIError(.badRequest, "invalid", "limit must be a positive number, not \"\(text)\"") }
            return n
        } ?? 100
        return json(try await blocking { () throws(AetherError) in try repo.history(branch, limit: limit).map(SnapshotInfo.init) })
    }

    /// The snapshot (or live session) as an archive, streamed as the exporter writes it: checked
    /// first (what it names, the policy), so that a refusal is a status, not a cut stream.
    func export(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, ref = try parameter(c, "ref")
        let formatText = r.uri.queryParameters.get("format") ?? "tar"
        guard let format = ArchiveFormat(rawValue: formatText) else {
            throw APIError(.badRequest, "invalid", "format \(formatText): expected \(ArchiveFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        try await blocking { () throws(AetherError) in _ = try repo.exportable(ref, root: try SessionAccess.root(repo, ref)) }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw APIError(.internalServerError, "system", "pipe: \(String(cString: strerror(errno)))") }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        // The exporter writes into the pipe on a thread of its own (it blocks while the pipe is full,
        // so it must not hold one the reader needs); the body reads it on the pool.
        let done = Task { () -> ExportSummary? in
            await withCheckedContinuation { (finished: CheckedContinuation<ExportSummary?, Never>) in
                Thread {
                    defer { close(writeEnd) }
                    finished.resume(returning: try? Archives.export(repo, ref: ref, format: format, path: nil, fd: writeEnd))
                }.start()
            }
        }
        let type = format == .tar ? "application/x-tar" : format == .tarZstd ? "application/zstd" : "application/gzip"
        let body = ResponseBody { writer in
            defer { close(readEnd) }
            while true {
                let chunk = try await blockingPool.runIfActive { () -> [UInt8] in
                    var buffer = [UInt8](repeating: 0, count: 1 << 20)
                    let n = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
                    return n > 0 ? Array(buffer.prefix(n)) : []
                }
                if chunk.isEmpty { break }
                try await writer.write(ByteBuffer(bytes: chunk))
            }
            // A failed export ends the stream without its end: the client sees a cut transfer.
            guard await done.value != nil else { throw APIError(.internalServerError, "failed", "the export of \(ref) failed") }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: type, .contentDisposition: "attachment; filename=\"\(ref).\(format.rawValue)\""], body: body)
    }

    /// An uploaded archive becomes a new session (`?session=NAME`) or a checkpoint of one
    /// (`?into=NAME`), for the token's uid: spooled to a file of the store (at most `maxUpload`
    /// bytes), then imported as `aetherfs import` does, with its refusals.
    func importArchive(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, caller = c.token!.uid
        let query = r.uri.queryParameters
        let target: Archives.Target
        switch (query.get("session"), query.get("into")) {
        case (let name?, nil): target = .newSession(name)
        case (nil, let name?): target = .into(name)
        default: throw APIError(.badRequest, "invalid", "give one of ?session=NEW or ?into=SESSION")
        }
        let message = query.get("message") ?? "import over the service surface"
        let spool = repo.path + "/tmp/upload-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try await blocking { () throws(AetherError) in try domain { try FileIO.makeDirectories(repo.path + "/tmp") } }
        let fd = open(spool, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw APIError(.internalServerError, "system", "cannot spool the upload: \(String(cString: strerror(errno)))") }
        unlink(spool)
        defer { close(fd) }
        var total: Int64 = 0
        for try await buffer in r.body {
            total += Int64(buffer.readableBytes)
            guard total <= options.maxUpload else {
                throw APIError(.contentTooLarge, "too_big", "the upload is larger than \(options.maxUpload) bytes (aetherfs serve --max-upload)")
            }
            let bytes = Array(buffer.readableBytesView)
            try await blockingPool.runIfActive {
                var at = 0
                while at < bytes.count {
                    let n = bytes[at...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    guard n > 0 else { throw APIError(.init(code: 507, reasonPhrase: "Insufficient Storage"), "no_space", "cannot spool the upload: \(String(cString: strerror(errno)))") }
                    at += n
                }
            }
        }
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw APIError(.internalServerError, "system", "cannot read the spooled upload back") }
        let gid = getpwuid(caller).map { $0.pointee.pw_gid } ?? caller
        let summary = try await blocking { () throws(AetherError) -> ImportSummary in
            try Archives.importArchive(repo, fd: fd, into: target, message: message, meta: [:], options: ImportOptions(uid: caller, gid: gid), caller: caller)
        }
        return json(summary, status: .created)
    }

    /// A JSON (or text) body of at most `maxJSON` bytes, as UTF-8.
    func body(_ r: Request) async throws -> String {
        var r = r
        let buffer: ByteBuffer
        do {
            buffer = try await r.collectBody(upTo: options.maxJSON)
        } catch {
            throw APIError(.contentTooLarge, "too_big", "the request body is larger than \(options.maxJSON) bytes")
        }
        guard let text = buffer.getString(at: buffer.readerIndex, length: buffer.readableBytes) else {
            throw APIError(.badRequest, "invalid", "the request body is not UTF-8")
        }
        return text
    }

    /// A JSON object body with only `known` keys.
    func object(_ text: String, known: Set<String>) throws -> [String: Any] {
        guard let value = try? JSONSerialization.jsonObject(with: Data(text.utf8)), let fields = value as? [String: Any] else {
            throw APIError(.badRequest, "invalid", "the body must be a JSON object")
        }
        if let unknown = fields.keys.first(where: { !known.contains($0) }) {
            throw APIError(.badRequest, "invalid", "unknown key \"\(unknown)\" (expected \(known.sorted().joined(separator: ", ")))")
        }
        return fields
    }

    /// A query flag: absent or `false` is false, `true` true, anything else a bad request.
    func flag(_ r: Request, _ name: String) throws -> Bool {
        switch r.uri.queryParameters.get(name) {
        case nil, "false": false
        case "true": true
        case let other?: throw APIError(.badRequest, "invalid", "\(name) must be true or false, not \"\(other)\"")
        }
    }

    func parameter(_ c: APIContext, _ name: String) throws -> String {
        guard let value = c.parameters.get(name) else { throw APIError(.badRequest, "invalid", "missing \(name)") }
        return value.removingPercentEncoding ?? value
    }
}
