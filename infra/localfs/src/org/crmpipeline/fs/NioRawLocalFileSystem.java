package org.crmpipeline.fs;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermissions;

import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.io.nativeio.NativeIO;

/**
 * Hadoop's local file system with permissions set, and symbolic links told apart, through
 * java.nio instead of processes. Without Hadoop's native library (pyspark ships none),
 * {@link RawLocalFileSystem} starts a {@code chmod} for every file and directory it creates
 * (dozens per Parquet file a Spark task writes, the larger part of writing a small file), and a
 * {@code readlink} for every status a {@code FileContext} asks for (hundreds per Delta commit).
 */
public class NioRawLocalFileSystem extends RawLocalFileSystem {

  @Override
  public void setPermission(Path p, FsPermission permission) throws IOException {
    if (NativeIO.isAvailable() || permission.getStickyBit()) {
      super.setPermission(p, permission);
      return;
    }
    String symbolic = permission.getUserAction().SYMBOL + permission.getGroupAction().SYMBOL
        + permission.getOtherAction().SYMBOL;
    Files.setPosixFilePermissions(pathToFile(p).toPath(), PosixFilePermissions.fromString(symbolic));
  }

  /** A path that is no symbolic link has the status {@link #getFileStatus} gives, as Hadoop's own
   * method finds out by starting {@code readlink}; a link is left to it. */
  @Override
  public FileStatus getFileLinkStatus(Path f) throws IOException {
    if (!Files.isSymbolicLink(pathToFile(f).toPath())) {
      return getFileStatus(f);
    }
    return super.getFileLinkStatus(f);
  }
}
