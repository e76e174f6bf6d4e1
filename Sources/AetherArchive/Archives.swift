#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherVFS

/// The export and import use cases, as the CLI and the service surface both call them.
public enum Archives {
    /// What an import becomes: a new session with the tree as its first checkpoint, or a checkpoint
    /// (and the tree, as after a restore) of an existing session.
    public enum Target: Sendable {
        case newSession(String)
        case into(String)
    }

    /// Writes `ref` (a checkpoint, commit, branch, `SESSION@NAME`, or a session's live state, asked of
    /// its daemon when mounted) to `fd` as an archive, under the policy (never-persist paths withheld,
    /// `export_requires_commit`). A write in flight: the never-persist trees it may write are read at once.
    public static func export(_ repo: Repository, ref: String, format: ArchiveFormat, path: String?, fd: Int32,
                              progress: ((UInt64) throws(AetherError) -> Void)? = nil) throws(AetherError) -> ExportSummary {
        try repo.writing { () throws(AetherError) -> ExportSummary in
            let (root, withheld) = try repo.exportable(ref, root: try SessionAccess.root(repo, ref))
            let exporter = try SnapshotExporter(repo: repo, format: format, fd: fd)
            exporter.progress = progress
            var summary = try exporter.export(root: root, path: path)
            summary.withheld = withheld
            return summary
        }
    }

    /// Reads the archive on `fd` into the store for `caller` and makes it `target`. What it becomes is
    /// checked before the archive is read; one write in flight from its first object to the record
    /// that names the tree.
    public static func importArchive(_ repo: Repository, fd: Int32, into target: Target, message: String, meta: [String: String],
                                     options: ImportOptions, caller: UInt32,
                                     progress: ((Int64, ImportSummary) throws(AetherError) -> Void)? = nil) throws(AetherError) -> ImportSummary {
        if (options.allowDevices || options.keepSetid) && caller != 0 {
            throw .notPermitted("\(options.allowDevices ? "taking in devices" : "keeping setuid bits") is for root only")
        }
        _ = try Workspace.validateRecord(message: message, meta: meta, what: "an import")
        switch target {
        case .newSession(let name):
            try Repository.validateName(name, what: "session")
            if (try? repo.session(named: name)) != nil { throw .exists("session \(name)") }
        case .into(let name):
            try repo.authorize(caller, "import", in: try repo.session(named: name))
        }
        return try repo.writing { () throws(AetherError) -> ImportSummary in
            let importer = try ArchiveImporter(repo: repo, options: options, fd: fd)
            importer.progress = progress
            var (root, summary) = try importer.run()
            switch target {
            case .newSession(let name):
                _ = try repo.createSession(name: name, tree: root, message: message, meta: meta, owner: caller)
            case .into(let name):
                _ = try SessionAccess.act(repo, session: name, .adopt(ImportRequest(root: root.hex, message: message, meta: meta)), caller: caller).snapshot()
            }
            summary.root = root.hex
            return summary
        }
    }
}
